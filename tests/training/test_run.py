"""Training end to end on a tiny real store: resume exactness, the NaN guard, the CLIs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from training import checkpoint
from training.run import NonFiniteLoss, TrainConfig, main, train

TINY = {"width": 1 / 8, "size": 64, "batch_size": 4, "holdout": 0.25, "log_every": 1, "eval_images": 4}


def cfg(store, out, **kw) -> TrainConfig:
    return TrainConfig(store=str(store), out=str(out), **(TINY | {"steps": 6, "ckpt_every": 100} | kw))


def test_resumed_run_equals_uninterrupted(tiny_store, tmp_path):
    store, _ = tiny_store
    whole = train(cfg(store, tmp_path / "a"))
    assert whole["step"] == 6 and (tmp_path / "a" / "evaluation.md").is_file()
    c = cfg(store, tmp_path / "b")
    train(c, stop_at=3)
    assert checkpoint.load(tmp_path / "b" / "checkpoint-last.pt")["step"] == 3
    train(c, resume=True)
    a = checkpoint.load(tmp_path / "a" / "checkpoint-last.pt")
    b = checkpoint.load(tmp_path / "b" / "checkpoint-last.pt")
    assert b["step"] == 6
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows_a] == [r.split(",")[:3] for r in rows_b]  # same steps and LRs
    la = np.array([float(r.split(",")[3]) for r in rows_a[1:]])
    lb = np.array([float(r.split(",")[3]) for r in rows_b[1:]])
    assert np.allclose(la, lb, rtol=1e-4)


def test_a_resume_after_a_kill_logs_each_step_once(tiny_store, tmp_path):
    """Killed after its last checkpoint (step 3) had logged steps 4 and 5: the resumed run logs them again, once."""
    c = cfg(tiny_store[0], tmp_path)
    train(c, stop_at=3)
    logged = (tmp_path / "metrics.csv").read_text()
    (tmp_path / "metrics.csv").write_text(logged + "4,0,0.1,9,9,9,1,,\n5,0,0.1,9,9,9,1,,\n")  # as the killed run wrote
    train(c, resume=True)
    steps = [r.split(",")[0] for r in (tmp_path / "metrics.csv").read_text().splitlines()]
    assert steps == ["step", "1", "2", "3", "4", "5", "6"]
    assert ",9,9,9," not in (tmp_path / "metrics.csv").read_text()


def test_the_learning_rate_follows_eq_21_23(tiny_store, tmp_path):
    store, _ = tiny_store
    train(cfg(store, tmp_path, lr=0.1, lr_pow=0.9))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows]
    lrs = [float(r.split(",")[2]) for r in rows]
    assert steps == [1, 2, 3, 4, 5, 6]
    # the rate each step used: lr0 (1 - done / steps)^lrPow with done = the steps before it
    assert lrs == pytest.approx([0.1 * (1 - (s - 1) / 6) ** 0.9 for s in steps], rel=1e-5)


def test_resume_with_other_settings_is_refused(tiny_store, tmp_path):
    store, _ = tiny_store
    train(cfg(store, tmp_path), stop_at=2)
    with pytest.raises(ValueError, match="lr"):
        train(cfg(store, tmp_path, lr=0.5), resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_store, tmp_path):
    store, _ = tiny_store
    c = cfg(store, tmp_path, lr=1e3, steps=50, ckpt_every=1)
    with pytest.raises(NonFiniteLoss, match="step"):
        train(c)
    bad = json.loads((tmp_path / "nonfinite.json").read_text())
    good = checkpoint.load(tmp_path / "checkpoint-last.pt")
    assert 0 < good["step"] <= bad["step"]  # an earlier step's checkpoint, never a poisoned one
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "none.zarr")]) == 2
    assert main(["--store", str(tmp_path), "--variant", "resnet"]) == 2
    assert "variant" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--no-such-option"])
    assert e.value.code == 2


def test_colorize_cli_keeps_size_and_skips_bad_files(tiny_store, tmp_path):
    from training.colorize import main as colorize

    store, _ = tiny_store
    train(cfg(store, tmp_path / "run", steps=2))
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(src / "a.jpg")
    Image.new("LA", (33, 21)).save(src / "gray.png")
    (src / "bad.jpg").write_bytes(b"not an image")
    rc = colorize(
        ["--checkpoint", str(tmp_path / "run" / "checkpoint-last.pt"), str(src), "--out", str(tmp_path / "o")]
    )
    assert rc == 1
    assert Image.open(tmp_path / "o" / "in" / "a.png").size == (70, 50)
    assert Image.open(tmp_path / "o" / "in" / "gray.png").size == (33, 21)
    assert not (tmp_path / "o" / "in" / "bad.png").exists()


def test_evaluate_cli(tiny_store, tmp_path):
    from training.evaluate import main as evaluate

    store, _ = tiny_store
    train(cfg(store, tmp_path, steps=2))
    assert (
        evaluate(["--checkpoint", str(tmp_path / "checkpoint-last.pt"), "--store", str(store), "--split", "all"]) == 0
    )
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["images"] == 12 and report["gray"]["colourfulness"] < 1 and 5 < report["gray"]["psnr"] < 60
    assert report["gray"]["overflow"] == 0 and 0 <= report["model"]["overflow"] <= 1 and 0 < report["neutral_share"] < 1
    assert "| overflow |" in (tmp_path / "evaluation.md").read_text()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny_store, tmp_path):
    import subprocess
    import sys

    store, _ = tiny_store
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517"]
    cmd += ["-m", "training.run", "--store", str(store), "--out", str(tmp_path), "--width", "0.125", "--size", "64"]
    cmd += ["--batch-size", "4", "--steps", "3", "--holdout", "0.25", "--eval-images", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    state = checkpoint.load(tmp_path / "checkpoint-last.pt")
    assert state["step"] == 3 and state["world"] == 2 and "world" not in state["config"]
    assert (tmp_path / "evaluation.md").is_file()


def test_the_plotted_class_loss_is_weighted_by_the_runs_lam_cls():
    from training.logs import loss_series

    rows = [
        {"step": "1", "loss": "3.0", "colour": "2.0", "class": "4.0"},
        {"step": "2", "loss": "2", "colour": "1", "class": "2"},
    ]
    series = loss_series(rows, lam_cls=0.25)
    assert series["class x lambda_cls"] == [(1, 1.0), (2, 0.5)]
    assert series["loss"] == [(1, 3.0), (2, 2.0)]
    assert "class x lambda_cls" not in loss_series([{**rows[0], "class": "0"}], lam_cls=0.25)
