"""Training as timm and torchvision users expect it: TensorBoard, validation with a best checkpoint, --keep,
--config, resuming with run-local changes (and refusing the others), the library schedule, safe loading."""

import json

import numpy as np
import pytest
import torch

from training import checkpoint
from training.run import main
from training.trainer import Run, setup

TINY = ["--width", "0.125", "--size", "64", "--batch-size", "4", "--holdout", "0.25", "--eval-images", "4"]


def args(store, out, *extra) -> list[str]:
    return ["--store", str(store), "--out", str(out), *TINY, *extra]


def test_validation_best_checkpoint_keep_and_tensorboard(tiny_store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, _ = tiny_store
    (tmp_path / "checkpoint-0-notes.pt").write_bytes(b"mine: --keep deletes the run's own step checkpoints only")
    assert main(args(store, tmp_path, "--steps", "6", "--eval-every", "2", "--ckpt-every", "2", "--keep", "2",
                     "--log-every", "1")) == 0  # fmt: skip
    names = sorted(p.name for p in tmp_path.glob("checkpoint*.pt"))
    assert names == ["checkpoint-0-notes.pt", "checkpoint-00000004.pt", "checkpoint-00000006.pt", "checkpoint-best.pt",
                     "checkpoint-last.pt"]  # fmt: skip
    best = checkpoint.load(tmp_path / "checkpoint-best.pt")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    psnr = {e.step: e.value for e in events.Scalars("val/psnr")}
    assert sorted(psnr) == [2, 4, 6] and best["step"] == max(psnr, key=psnr.get)
    assert abs(best["best_psnr"] - max(psnr.values())) < 1e-3
    assert {"train/loss", "train/lr", "train/images_per_s", "val/loss"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] and len(events.Scalars("train/loss")) == 6


def test_resume_accepts_run_local_changes_and_refuses_the_others(tiny_store, tmp_path, capsys):
    from training.config import TrainConfig
    from training.run import train

    store, _ = tiny_store
    assert main(args(store, tmp_path / "whole", "--steps", "6", "--log-every", "1")) == 0
    whole = checkpoint.load(tmp_path / "whole" / "checkpoint-last.pt")
    for name in ("here", "there"):  # stopped at step 3, as a pre-empted run
        cfg = TrainConfig(store=str(store), out=str(tmp_path / name), width=0.125, size=64, batch_size=4,
                          holdout=0.25, steps=6, eval_images=4, log_every=1)  # fmt: skip
        train(cfg, stop_at=3)
    assert main(args(store, tmp_path / "here", "--steps", "6", "--log-every", "2", "--resume")) == 0  # in place
    ckpt = str(tmp_path / "there" / "checkpoint-last.pt")  # from a checkpoint, into a new folder
    assert main(args(store, tmp_path / "moved", "--steps", "6", "--log-every", "2", "--resume", ckpt)) == 0
    for out in ("here", "moved"):
        state = checkpoint.load(tmp_path / out / "checkpoint-last.pt")
        assert (
            state["step"] == 6 and state["config"]["log_every"] == 2 and state["config"]["out"] == str(tmp_path / out)
        )
        assert all(
            torch.allclose(whole["model"][k].float(), state["model"][k].float(), atol=1e-5) for k in whole["model"]
        )
    assert main(args(store, tmp_path / "here", "--steps", "6", "--lr", "0.5", "--resume")) == 2
    assert "other settings (lr)" in capsys.readouterr().err


def test_config_file_with_flags_over_it(tiny_store, tmp_path):
    store, _ = tiny_store
    (tmp_path / "c.yaml").write_text(f"store: {store}\nwidth: 0.125\nsize: 64\nbatch_size: 4\nsteps: 2\nlr: 0.01\n")
    assert main(["--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "a"), "--lr", "0.02"]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["lr"] == 0.02 and saved["width"] == 0.125 and saved["steps"] == 2
    assert main(["--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")]) == 0  # a run's own
    assert json.loads((tmp_path / "b" / "config.json").read_text()) == saved | {"out": str(tmp_path / "b")}
    (tmp_path / "bad.json").write_text(json.dumps({"store": str(store), "learning_rate": 1}))
    assert main(["--config", str(tmp_path / "bad.json")]) == 2


def test_the_schedule_is_eq_21_to_23(tiny_store, tmp_path):
    from training.config import TrainConfig

    store, _ = tiny_store
    cfg = TrainConfig(store=str(store), out=str(tmp_path), width=0.125, size=64, steps=50, lr=0.1, lr_pow=0.9)
    run: Run = setup(cfg)
    got = []
    for _ in range(run.total):
        got.append(run.lr)
        run.opt.step()
        for s in run.schedulers:
            s.step()
    want = [0.1 * (1 - t / 50) ** 0.9 for t in range(50)]
    assert np.allclose(got, want, rtol=1e-9, atol=1e-15)


def test_checkpoints_load_with_weights_only(tiny_store, tmp_path):
    store, _ = tiny_store
    assert main(args(store, tmp_path, "--steps", "1")) == 0
    state = torch.load(tmp_path / "checkpoint-last.pt", weights_only=True)
    assert state["step"] == 1 and state["config"]["variant"] == "full"
    with pytest.raises(checkpoint.CheckpointError, match="could run code"):
        (tmp_path / "evil.pt").write_bytes(b"\x80\x04cos\nsystem\n.")
        checkpoint.load(tmp_path / "evil.pt")
