"""Models that leave the project and come back: a trained run exported as a Hugging Face model folder (weights
as safetensors, config.json, a model card holding the run's own evaluation) and as ONNX, whose outputs match
PyTorch's on real photos; loaded back by colorize, colorize-evaluate and a fine-tuning run; tampered folders
refused in one line."""

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
from training import checkpoint
from training.colorize import main as colorize
from training.config import TrainConfig
from training.export import main as export
from training.run import train

TINY = {"width": 1 / 8, "size": 64, "batch_size": 4, "holdout": 0.25, "log_every": 1, "eval_images": 4,
        "tensorboard": False, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run of the paper's system (`full`, with its classifier), trained a few steps and evaluated."""
    root = tmp_path_factory.mktemp("model")
    store, _ = make_store(root / "s", n=12, size=64)
    train(TrainConfig(store=str(store), out=str(root / "run"), steps=4, **TINY))
    return root / "run"


@pytest.fixture(scope="module")
def folder(run) -> Path:
    out = run.parent / "export"
    assert export([str(run), "--out", str(out), "--onnx"]) == 0
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photos at two sizes (and odd shapes), as PNG and JPEG."""
    root = tmp_path_factory.mktemp("photos") / "in"
    root.mkdir()
    for k, (_, data) in enumerate(real_photos(4)):
        img = Image.open(__import__("io").BytesIO(data)).convert("RGB")
        img.resize((61 + 70 * (k % 2), 45 + 50 * (k % 2))).save(root / f"{k}.png")
        img.save(root / f"{k}.jpg", quality=92)
    return root


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


def L_of(path: Path) -> np.ndarray:
    from training.photos import read_L

    return read_L(path)


def test_onnx_logits_and_categories_match_pytorch_on_real_photos_at_two_sizes(folder, photos):
    import onnx
    import onnxruntime as ort

    from training.modelfolder import load_folder

    proto = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 1 and isinstance(dims[2], str) and isinstance(dims[3], str)
    model, _, _ = load_folder(folder)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for h, w in ((64, 64), (96, 160)):  # the training size and another: dynamic height and width
        x = np.stack([np.asarray(Image.fromarray(L_of(p).astype(np.uint8)).resize((w, h)), np.float32)[None] / 100
                      for p in sorted(photos.glob("*.jpg"))])  # fmt: skip
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(x)) if t is not None]
        got = sess.run(None, {"L": x})
        assert len(got) == 2 and all(a.shape == b.shape for a, b in zip(got, want, strict=True))
        assert max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)) <= 1e-3
        assert (got[0].argmax(1) == want[0].argmax(1)).mean() >= 0.999


@pytest.mark.parametrize("recovery", ["argmax", "annealed"])
def test_colorize_through_onnx_matches_pytorch_within_one_level(folder, photos, tmp_path, recovery):
    from training.onnx_colorize import dispatch

    assert colorize(["--model", str(folder), str(photos), "--out", str(tmp_path / "pt"), "--recovery", recovery]) == 0
    onnx = ["--onnx", str(folder / "model.onnx"), str(photos), "--out", str(tmp_path / "ox"), "--recovery", recovery]
    assert dispatch(onnx) == 0
    outputs = sorted((tmp_path / "pt").rglob("*.png"))
    assert len(outputs) == 8
    for f in outputs:
        a = np.asarray(Image.open(f), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "ox" / f.relative_to(tmp_path / "pt")), dtype=np.int16)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, f.name  # the full-resolution colour image


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
from training.onnx_colorize import dispatch
code = dispatch(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(code)
"""


def test_colorize_onnx_runs_where_torch_cannot_be_imported(folder, photos, tmp_path):
    from training.onnx_colorize import dispatch

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = ["--onnx", str(folder / "model.onnx"), str(photos / "1.png"), "--out"]
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args, str(tmp_path / "a")], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dispatch([*args, str(tmp_path / "b")]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / "1.png")), np.asarray(Image.open(tmp_path / "b" / "1.png"))
    )
    torch_path = [sys.executable, "-c", BLOCK_TORCH, str(photos), "--out", str(tmp_path / "c"), "--checkpoint", "x"]
    blocked = subprocess.run(torch_path, env=env, capture_output=True, text=True, timeout=300)
    assert blocked.returncode != 0 and "torch is not installed here" in blocked.stderr  # the test can fail


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


def tampered(folder: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "tampered"
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    change(out)
    return out


def _config(change):
    def edit(d: Path):
        config = json.loads((d / "config.json").read_text())
        change(config)
        (d / "config.json").write_text(json.dumps(config))

    return edit


def _retype(d: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    save_file({k: v.double() if v.is_floating_point() else v for k, v in weights.items()}, d / "model.safetensors")


def _drop_a_tensor(d: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    weights.pop("head.bias")
    save_file(weights, d / "model.safetensors")


def _pickle(d: Path):
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")


WIDTH = "do not fit the full it names (encoder.0.short.0.weight"
TAMPERED = {
    "a pickle beside it": (_pickle, "pytorch_model.bin, a pickle"),
    "another width": (_config(lambda c: c.update(width=0.25)), WIDTH),
    "another system": (_config(lambda c: c.update(system="unet")), "do not fit the unet it names"),
    "a layer missing": (_drop_a_tensor, "head.bias is missing"),
    "weights cut short": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:999]),
                          "does not read as safetensors"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{'system': "), "does not read as JSON"),
    "a foreign config": (lambda d: (d / "config.json").write_text('{"model_type": "x"}'), "not a model folder's"),
    "an unknown system": (_config(lambda c: c.update(system="evil")), "does not name a model this program builds"),
    "a forged class count": (_config(lambda c: c.update(n_classes=10**9)), "n_classes is missing or out of bounds"),
    "a forged size": (_config(lambda c: c["input"].update(size=33)), "input.size is missing or out of bounds"),
    "a size to run out of memory": (_config(lambda c: c["input"].update(size=8192)), "input.size is missing or out"),
    "a forged holdout": (_config(lambda c: c["train_config"].update(holdout="x")), "train_config.holdout is missing"),
    "a forged T": (_config(lambda c: c.update(T=0)), "T is missing or out of bounds"),
    "config nested deeply": (lambda d: (d / "config.json").write_text("[" * 99999 + "]" * 99999), "nested too deeply"),
    "config a FIFO": (lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")), "does not read as JSON"),
    "weights a FIFO": (lambda d: ((d / "model.safetensors").unlink(), os.mkfifo(d / "model.safetensors")),
                       "does not read as safetensors"),
    "weights of another dtype": (_retype, "is torch.float64, the model torch.float32"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_folder_is_refused_in_one_line(case, folder, photos, tmp_path, capsys):
    change, message = TAMPERED[case]
    bad = tampered(folder, tmp_path, change)
    assert colorize(["--model", str(bad), str(photos / "0.jpg"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


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
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
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


def test_a_system_torchs_exporter_cannot_express_is_refused_in_one_line():
    from training.models import create_model
    from training.onnx_export import ExportFailed, export_onnx

    model = create_model("cheng15", 1 / 8, "", 1000)
    config = {"system": "cheng15", "input": {"size": 64}, "outputs": {"class": None}}
    with pytest.raises(ExportFailed, match=r"^cheng15 does not export to ONNX \(") as e:
        export_onnx(model, config, "/nonexistent/m.onnx")
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("head", "recovery"), [("classify", "argmax"), ("classify", "annealed"), ("l1", "regression")])
def test_the_numpy_recovery_is_torchs(head, recovery):
    from training.loss import AB_SCALE, T_DEFAULT, recover_ab
    from training.onnx_colorize import recover

    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 2 if head == "l1" else 313, 5, 7, generator=g) * (0.3 if head == "l1" else 4)
    want = recover_ab(out, head, recovery).double().numpy()
    got = recover(out.numpy(), head, recovery, T_DEFAULT, AB_SCALE)
    assert np.abs(got - want).max() < 1e-3


def _onnx_with(folder: Path, out: Path, change) -> Path:
    import json as json_

    import onnx

    proto = onnx.load(folder / "model.onnx")
    entry = next(p for p in proto.metadata_props if p.key == "colorize_config")
    config = json_.loads(entry.value)
    change(config, proto)
    entry.value = json_.dumps(config)
    onnx.save(proto, out)
    return out


def _rename_input(config: dict, proto) -> None:
    old = proto.graph.input[0].name
    proto.graph.input[0].name = "X"
    for node in proto.graph.node:
        node.input[:] = ["X" if name == old else name for name in node.input]


ONNX_TAMPERED = {
    "T missing": (lambda c, p: c.pop("T"), "T is missing or out of bounds"),
    "size to run out of memory": (lambda c, p: c["input"].update(size=8192), "input.size is missing or out of bounds"),
    "an unknown head": (lambda c, p: c.update(head="nope"), "head is missing or out of bounds"),
    "recoveries not a list": (lambda c, p: c.update(recoveries=5), "recoveries is missing or out of bounds"),
    "the output renamed": (lambda c, p: setattr(p.graph.output[0], "name", "other"), "not a model onnxruntime loads"),
    "the input renamed": (_rename_input, "does not take L (float) and give colour"),
}


@pytest.mark.parametrize("case", list(ONNX_TAMPERED))
def test_a_tampered_onnx_file_is_refused_in_one_line_leaving_nothing(case, folder, photos, tmp_path, capsys):
    from training.onnx_colorize import dispatch

    change, message = ONNX_TAMPERED[case]
    bad = _onnx_with(folder, tmp_path / "bad.onnx", change)
    assert dispatch(["--onnx", str(bad), str(photos / "0.jpg"), "--out", str(tmp_path / "o" / "deep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


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
