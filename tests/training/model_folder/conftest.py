"""Fixtures of the model folder tests: one run of the paper's system, trained a few steps and evaluated, its
export (safetensors, config.json, a model card and ONNX) and real photos to colorize. Package-scoped: every
module here reads the same run and the same folder, built once."""

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_store, real_photos
from training.config import TrainConfig
from training.export import main as export
from training.run import train

TINY = {"width": 1 / 8, "size": 64, "batch_size": 4, "holdout": 0.25, "log_every": 1, "eval_images": 4,
        "tensorboard": False, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="package")
def run(tmp_path_factory) -> Path:
    """A run of the paper's system (`full`, with its classifier), trained a few steps and evaluated."""
    root = tmp_path_factory.mktemp("model")
    store, _ = make_store(root / "s", n=12, size=64)
    train(TrainConfig(store=str(store), out=str(root / "run"), steps=4, **TINY))
    return root / "run"


@pytest.fixture(scope="package")
def folder(run) -> Path:
    out = run.parent / "export"
    assert export([str(run), "--out", str(out), "--onnx"]) == 0
    return out


@pytest.fixture(scope="package")
def photos(tmp_path_factory) -> Path:
    """Real photos at two sizes (and odd shapes), as PNG and JPEG."""
    root = tmp_path_factory.mktemp("photos") / "in"
    root.mkdir()
    for k, (_, data) in enumerate(real_photos(4)):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.resize((61 + 70 * (k % 2), 45 + 50 * (k % 2))).save(root / f"{k}.png")
        img.save(root / f"{k}.jpg", quality=92)
    return root
