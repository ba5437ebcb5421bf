"""What a training run opens once: each store (one reader for the loader, the validations and the evaluation),
and a step that never waits on the device (it syncs only where the loop logs, validates or saves)."""

import collections
import shutil
import sys
from pathlib import Path

import torch

from training.data import on_device
from training.run import TrainConfig, main
from training.trainer import setup, train_step

PROJECT = Path(__file__).resolve().parents[2]
FLAGS = ["--width", "0.125", "--size", "64", "--batch-size", "4", "--steps", "4", "--holdout", "0.25",
         "--eval-every", "2", "--val-images", "4", "--eval-images", "4", "--no-tensorboard"]  # fmt: skip


def _count_opens(monkeypatch) -> collections.Counter:
    import zarr

    opened, real = collections.Counter(), zarr.open_group

    def counting(store, *args, **kwargs):
        opened[str(store)] += 1
        return real(store, *args, **kwargs)

    monkeypatch.setattr(zarr, "open_group", counting)
    return opened


def test_a_run_with_validations_and_its_evaluation_opens_its_store_once(tiny_store, tmp_path, monkeypatch):
    store = str(tiny_store[0])
    opened = _count_opens(monkeypatch)
    assert main(["--store", store, "--out", str(tmp_path / "run"), *FLAGS]) == 0
    assert (tmp_path / "run" / "evaluation.json").is_file() and (tmp_path / "run" / "checkpoint-best.pt").is_file()
    assert opened == {store: 1}


def test_a_run_with_an_eval_store_opens_each_store_once(tiny_store, tmp_path, monkeypatch):
    store, other = str(tiny_store[0]), str(tmp_path / "eval.zarr")
    shutil.copytree(store, other)
    opened = _count_opens(monkeypatch)
    assert main(["--store", store, "--eval-store", other, "--out", str(tmp_path / "run"), *FLAGS]) == 0
    assert (tmp_path / "run" / "evaluation.json").is_file()
    assert opened == {store: 1, other: 1}


def test_a_training_step_never_waits_on_the_device(tiny_store, tmp_path, monkeypatch):
    """Every way project code could read a tensor's value back (a sync on a GPU) is watched while two steps run:
    none is taken; `check_finite`, the log points' check, takes one."""
    run = setup(TrainConfig(store=str(tiny_store[0]), out=str(tmp_path), width=1 / 8, size=64, batch_size=4))
    _, batch = next(iter(on_device(run.loader.epoch(0, 0), run.device, run.size, run.channels_last, run.crop)))
    reads = []

    def watch(name):
        real = getattr(torch.Tensor, name)

        def watched(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(str(PROJECT)) and "/tests/" not in caller:
                reads.append(f"{name} in {caller}:{sys._getframe(1).f_lineno}")
            return real(self, *args, **kwargs)

        return watched

    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, watch(name))
    for _ in range(2):
        train_step(run, batch)
        run.step += 1
    assert reads == []
    run.check_finite()
    assert reads  # the check reads the values back: the one place that waits
    run.folder.release()
