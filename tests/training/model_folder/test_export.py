"""Models that leave the project and come back: a trained run exported as a Hugging Face model folder (weights
as safetensors, config.json, a model card holding the run's own evaluation), loaded back by colorize,
colorize-evaluate, the demo and a fine-tuning run (ONNX: test_onnx.py; tampered folders: test_tampered.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_store, real_photos
from tests.training.model_folder.conftest import TINY
from training import checkpoint
from training.colorize import main as colorize
from training.config import TrainConfig
from training.export import main as export
from training.run import train


def test_the_folder_holds_weights_config_and_a_card_with_the_runs_own_metrics(run, folder):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    state = checkpoint.load(run / "checkpoint-last.pt")
    weights = load_file(folder / "model.safetensors")
    assert weights.keys() == state["model"].keys()
    assert all(torch.equal(weights[k], state["model"][k]) for k in weights)
    config = json.loads((folder / "config.json").read_text())
    assert (config["system"], config["width"], config["head"], config["input"]["size"]) == (
        "full",
        1 / 8,
        "classify",
        64,
    )
    assert (
        config["recovery"] == "argmax" and config["T"] == 0.38 and "divided by 100" in config["input"]["normalisation"]
    )
    assert config["outputs"]["class"] and config["training"]["step"] == 4
    store_attrs = json.loads((Path(state["config"]["store"]) / "zarr.json").read_text())["attributes"]
    assert config["training"]["store"]["build_id"] == store_attrs["build_id"]  # the store's fingerprint
    evaluation = json.loads((run / "evaluation.json").read_text())
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "colorize" and card.data.pipeline_tag
    assert card.data.tags and card.data.datasets
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["psnr"].metric_value == evaluation["model"]["psnr"]  # the run's own figure, unrounded
    assert results["colour_overflow"].metric_value == evaluation["model"]["overflow"]
    assert (
        results["ssim"].metric_value == evaluation["model"]["ssim"]
        and results["mae"].metric_value == evaluation["model"]["mae"]
    )
    assert results["psnr"].dataset_split == "holdout" and "protocol" in results["psnr"].dataset_args
    text = card.text
    for part in ("## Training", "## Evaluation", "gray input", "## Limits", "## Usage", "Wang, Zhiyuan", "--onnx"):
        assert part in text, part
    assert f"{evaluation['gray']['psnr']:.4g}" in text  # beside the gray baseline


def test_a_model_folder_colorizes_and_evaluates_as_its_checkpoint_locally_and_in_a_bucket(run, folder, photos, s3,
                                                                                         tmp_path):  # fmt: skip
    from training.evaluate import main as evaluate

    one = str(photos / "0.jpg")
    assert colorize(["--checkpoint", str(run / "checkpoint-last.pt"), one, "--out", str(tmp_path / "ckpt")]) == 0
    assert colorize(["--model", str(folder), one, "--out", str(tmp_path / "dir")]) == 0
    url = s3.put_tree(folder, "models", "m")
    assert colorize(["--model", url, one, "--out", str(tmp_path / "url")]) == 0
    assert export([str(run), "--out", "s3://models/exported"]) == 0  # written straight into a bucket
    assert colorize(["--model", "s3://models/exported", one, "--out", str(tmp_path / "url2")]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "url2" / "0.png")), np.asarray(Image.open(tmp_path / "ckpt" / "0.png"))
    )
    want = np.asarray(Image.open(tmp_path / "ckpt" / "0.png"))
    assert np.array_equal(want, np.asarray(Image.open(tmp_path / "dir" / "0.png")))
    assert np.array_equal(want, np.asarray(Image.open(tmp_path / "url" / "0.png")))
    store = json.loads((run / "config.json").read_text())["store"]
    assert evaluate(["--model", str(folder), "--store", store, "--split", "all", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "evaluation.json").read_text())["images"] == 12


def test_fine_tuning_starts_from_the_export_with_a_fresh_optimiser(folder, tmp_path):
    other, _ = make_store(tmp_path / "other", n=8, size=64, seed=3)
    out = tmp_path / "ft"
    frozen = {"lr": 1e-30, "weight_decay": 0.0}  # the weights stay the export's: only BatchNorm's statistics move
    train(TrainConfig(store=str(other), out=str(out), steps=1, init=str(folder), **TINY | frozen))
    state = checkpoint.load(out / "checkpoint-last.pt")
    from safetensors.torch import load_file

    exported = load_file(folder / "model.safetensors")
    params = [k for k in exported if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.allclose(state["model"][k], exported[k], rtol=0, atol=1e-20) for k in params)
    assert state["step"] == 1 and state["config"]["init"] == str(folder)
    assert all(s["step"] == 1 for s in state["optimizer"]["state"].values() if "step" in s)  # fresh: one step
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[0] == "1"


def test_init_of_another_width_is_refused_naming_the_first_layer_before_any_work(folder, tmp_path, capsys):
    from training.run import main

    store, _ = make_store(tmp_path / "s", n=8, size=64)
    args = ["--store", str(store), "--out", str(tmp_path / "ft"), "--init", str(folder), "--width", "0.25",
            "--size", "64", "--steps", "1", "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the full at width 0.25" in err[0] and "encoder.0.short.0.weight" in err[0], err
    assert not (tmp_path / "ft").exists()


def test_a_classifier_of_another_number_of_classes_is_reinitialised_and_said(folder):
    from training.finetune import initialise
    from training.models import create_model

    torch.manual_seed(0)
    model = create_model("full", 1 / 8, "classify", 1200)  # a store of 1,200 classes
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    said = []
    initialise(model, "full", 1 / 8, str(folder), lambda *a, **k: said.append(a[0]))
    from safetensors.torch import load_file

    exported, now = load_file(folder / "model.safetensors"), model.state_dict()
    assert torch.equal(now["classifier.1.weight"], fresh["classifier.1.weight"])  # kept fresh: 1,200 rows
    assert torch.equal(now["encoder.0.short.0.weight"], exported["encoder.0.short.0.weight"])
    assert torch.equal(now["classifier.0.0.weight"], exported["classifier.0.0.weight"])  # same shape: loaded
    assert any("1200 classes here, 1000 there: re-initialised" in s for s in said)


@pytest.mark.slow
def test_one_command_from_photos_builds_the_store_in_the_run_and_reuses_it(folder, tmp_path):
    photos = tmp_path / "mine"
    photos.mkdir()
    for k, (_, data) in enumerate(real_photos(10)):
        (photos / f"p{k}.jpg").write_bytes(data)  # no labels: flat, unlabelled photos
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.run", "--photos", str(photos), "--out", str(out), "--init", str(folder),
           "--width", "0.125", "--size", "64", "--batch-size", "4", "--steps", "2", "--device", "cpu",
           "--no-tensorboard", "--eval-images", "2"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"the store is {out}/store.zarr" in first.stdout and "the class loss is off" in first.stdout
    assert json.loads((out / "store.zarr" / "zarr.json").read_text())["attributes"]["n_images"] >= 9
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "is built already: reused" in again.stdout and "built from" not in again.stdout
    assert checkpoint.load(out / "checkpoint-last.pt")["step"] == 2


def test_a_checkpoint_exports_with_the_evaluation_that_scores_it_and_no_other(run, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    assert export([str(run / "checkpoint-last.pt"), "--out", str(tmp_path / "a")]) == 0
    assert ModelCard.load(tmp_path / "a" / "README.md").data.eval_results  # evaluation.json beside it scores it
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "checkpoint-last.pt", alone / "checkpoint-00000004.pt")
    shutil.copy(run / "evaluation.json", alone)  # it scores checkpoint-last.pt, not this file
    assert export([str(alone / "checkpoint-00000004.pt"), "--out", str(tmp_path / "b")]) == 0
    card = ModelCard.load(tmp_path / "b" / "README.md")
    assert not card.data.eval_results and "not evaluated" in card.text
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_the_demo_serves_a_model_folder(folder, photos):
    from training.demo import Colorizer

    colorizer = Colorizer(str(folder), "cpu", None)
    assert colorizer.cfg["variant"] == "full" and colorizer.cfg["size"] == 64


def test_export_checks_what_it_writes_beside_and_into(run, folder, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for text, message in [('{"model": {"psnr": [1]}, "images": 1}', "no figures of the model"),
                          ('{"model": {"psnr": 1.0}, "gray": [], "images": 1}', "gray baseline"),
                          ("[" * 100000 + "]" * 100000, "nested too deeply")]:  # fmt: skip
        bad.write_text(text)
        assert export([str(run), "--out", str(tmp_path / "m" / "x"), "--evaluation", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "m").exists()
    again = tmp_path / "again"
    assert export([str(run), "--out", str(again), "--onnx"]) == 0 and (again / "model.onnx").is_file()
    assert export([str(run), "--out", str(again)]) == 0
    assert not (again / "model.onnx").exists()  # an earlier graph is not left beside other weights
    (again / "pytorch_model.bin").write_bytes(b"x")
    assert export([str(run), "--out", str(again)]) == 2
    assert "pytorch_model.bin, a pickle" in capsys.readouterr().err


def test_init_refuses_weights_that_are_not_tensors(run, tmp_path, capsys):
    from training.run import main

    state = checkpoint.load(run / "checkpoint-last.pt")
    torch.save(state | {"model": {"encoder.0.short.0.weight": 5}}, tmp_path / "odd.pt")
    store = json.loads((run / "config.json").read_text())["store"]
    args = ["--store", store, "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "odd.pt"), "--width", "0.125",
            "--size", "64", "--steps", "1", "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a tensor" in err[0], err
