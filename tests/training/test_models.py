"""Every registered model joins the same matrix (timm-style): shapes, a finite step, exact resume, evaluate and
colorize with and without a reference; and the seed papers' figures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from training import checkpoint
from training.guidance import Reference
from training.models import MODELS, REGRESSION_HEADS, create_model, describe, spec_of
from training.run import TrainConfig, train

NAMES = list(MODELS)
TINY = {"width": 1 / 8, "size": 64, "batch_size": 4, "holdout": 0.25, "log_every": 1, "eval_images": 4}


def cfg(store, out, name, **kw) -> TrainConfig:
    return TrainConfig(store=str(store), out=str(out), variant=name, **(TINY | {"steps": 4, "ckpt_every": 100} | kw))


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_shapes(name):
    torch.manual_seed(0)
    spec = spec_of(name)
    model = create_model(name, width=1 / 8, n_classes=10)
    out, cls = model(torch.rand(2, 1, 64, 64))
    regression = spec.heads[0] in REGRESSION_HEADS
    assert out.shape[:2] == (2, 2 if regression else 313)
    assert out.shape[-1] in (16, 64) and (regression or out.shape[-1] == 16)
    assert cls is None or cls.shape == (2, 10)
    (out.float().square().mean() + (cls.square().mean() if cls is not None else 0)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_a_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(tiny_store, tmp_path, name):
    store, _ = tiny_store
    extra = {"pretrain_steps": 1} if spec_of(name).discriminator else {}
    whole = train(cfg(store, tmp_path / "a", name, **extra))
    assert whole["step"] == 4 and np.isfinite(whole["evaluation"]["model"]["psnr"])
    train(cfg(store, tmp_path / "b", name, **extra), stop_at=2)
    train(cfg(store, tmp_path / "b", name, **extra), resume=True)
    a, b = (checkpoint.load(tmp_path / k / "checkpoint-last.pt") for k in "ab")
    nets = ["model"] + (["discriminator"] if spec_of(name).discriminator else [])
    assert b["step"] == 4 and all(net in b for net in nets)
    for net in nets:
        for k in a[net]:
            assert torch.allclose(a[net][k].float(), b[net][k].float(), atol=1e-5), (net, k)
    losses = [json.loads((tmp_path / k / "evaluation.json").read_text())["model"]["psnr"] for k in "ab"]
    assert abs(losses[0] - losses[1]) < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_and_colorize_with_and_without_a_reference(tiny_store, tmp_path, name):
    from training.colorize import main as colorize
    from training.evaluate import main as evaluate

    store, source = tiny_store
    train(cfg(store, tmp_path, name, steps=2))
    ckpt = str(tmp_path / "checkpoint-last.pt")
    assert evaluate(["--checkpoint", ckpt, "--store", str(store), "--split", "all", "--guided", "1"]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    for key in ("model", "guided", "gray"):
        assert 0 <= report[key]["auc"] <= 1 and 0 <= report[key]["auc_rebalanced"] <= 1
    assert 0 <= report["model"]["overflow"] <= 1 and report["gray"]["overflow"] == 0
    photo = sorted(source.rglob("*.JPEG"))[0]
    Image.new("RGB", (40, 30), (30, 70, 210)).save(tmp_path / "blue.png")
    for extra, out in (([], "plain"), (["--reference", str(tmp_path / "blue.png")], "guided")):
        assert colorize(["--checkpoint", ckpt, str(photo), "--out", str(tmp_path / out), *extra]) == 0
    plain, guided = (np.asarray(Image.open(tmp_path / k / f"{photo.stem}.png")) for k in ("plain", "guided"))
    assert plain.shape == guided.shape == np.asarray(Image.open(photo)).shape
    assert not np.array_equal(plain, guided)  # the reference changed the colours
    ref = Reference.of_file(tmp_path / "blue.png").hist
    tv = [0.5 * np.abs(Reference.of_rgb(x).hist - ref).sum() for x in (plain, guided)]
    assert tv[1] < tv[0]  # the colours moved towards the reference's
    assert colorize(["--checkpoint", ckpt, str(photo), "--out", str(tmp_path / "x"), "--reference", "/no/such"]) == 2


def test_parameter_counts_match_the_papers():
    """zhang16: Zhang et al.'s network, ~32 M; cunet: CU-net's Tables 5-8; PatchGAN: pix2pix's 2.77 M."""
    assert abs(describe("zhang16")["params"] - 32.2e6) < 0.2e6
    assert abs(describe("cunet")["params"] - 23.15e6) < 0.05e6
    assert describe("pix2pix")["discriminator_params"] == 2_765_633  # the AFF net: tests/training/test_paper_tables


def test_unknown_names_heads_and_recoveries_are_refused():
    with pytest.raises(ValueError, match="variant"):
        create_model("resnet")
    with pytest.raises(ValueError, match="heads"):
        TrainConfig(store="x", variant="cunet", head="classify")
    with pytest.raises(ValueError, match="recoveries"):
        TrainConfig(store="x", variant="pix2pix", recovery="argmax")
    c = TrainConfig(store="x", variant="zhang16")
    assert (c.head, c.recovery, c.optimizer) == ("soft", "annealed", "adam")  # resolved, and saved so


def test_one_sided_label_smoothing_moves_only_the_discriminators_real_target(tiny_store, tmp_path):
    from training.gan import _bce

    logits = torch.zeros(2, 1, 4, 4)
    assert torch.isclose(_bce(logits, 0.9), _bce(logits, 1.0))  # at p = 0.5 the cross-entropy is log 2 for any target
    logits = torch.full((2, 1, 4, 4), 5.0)  # D sure of "real": smoothing keeps a loss, the hard target hardly any
    assert _bce(logits, 0.9) > 0.4 > 0.01 > _bce(logits, 1.0)
    store, _ = tiny_store
    runs = {s: train(cfg(store, tmp_path / str(s), "pix2pix", label_smoothing=s, pretrain_steps=0)) for s in (0.0, 0.1)}
    rows = {s: (tmp_path / str(s) / "metrics.csv").read_text().splitlines() for s in runs}
    disc = {s: [float(r.split(",")[8]) for r in rows[s][1:]] for s in rows}
    l1 = {s: [float(r.split(",")[4]) for r in rows[s][1:]] for s in rows}
    assert disc[0.0][0] != disc[0.1][0] and l1[0.0][0] == l1[0.1][0]  # the same generator at the first step
    with pytest.raises(ValueError, match="label_smoothing"):
        cfg(store, tmp_path, "pix2pix", label_smoothing=0.6)
