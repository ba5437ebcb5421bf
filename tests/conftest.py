"""Shared fixtures: real photographs (shared ImageNet sample or the embedded default), all 2^24 colours,
source trees for the flow and a tiny store. Flow tests run Prefect for real: each test process gets its own
PREFECT_HOME (SQLite) in a temp folder."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photo_batch
from pipeline.build import build_store
from pipeline.config import PreprocessConfig


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photos() -> np.ndarray:
    """uint8 (8, 96, 96, 3): real colour photographs."""
    return photo_batch(8, 96, seed=1)[0]


@pytest.fixture(scope="session")
def all_colours() -> np.ndarray:
    """uint8 (2^24, 3): every 8-bit sRGB colour, index r << 16 | g << 8 | b."""
    idx = np.arange(1 << 24, dtype=np.int64)
    return np.stack([idx >> 16, (idx >> 8) & 255, idx & 255], axis=-1).astype(np.uint8)


_home = tempfile.mkdtemp(prefix=f"prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a loaded 2-core machine
os.environ.pop("PREFECT_API_URL", None)


def real_photos(n: int) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of n real photographs: the shared ImageNet sample, else the embedded default."""
    from benchmarks.photos import imagenet_sample
    from pipeline.embedded import build_embedded_dataset

    sample = imagenet_sample()
    if sample is not None:
        files = sorted((sample / "train").glob("*/*.JPEG"))[:n]
        return [(f.parent.name, f.read_bytes()) for f in files]
    root = build_embedded_dataset(Path(tempfile.mkdtemp()) / "embedded")
    files = sorted((root / "train").glob("*/*.JPEG"))
    pick = np.random.default_rng(0).choice(len(files), n, replace=False)
    return [(files[i].parent.name, files[i].read_bytes()) for i in sorted(pick)]


@pytest.fixture(scope="session")
def mixed_source(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A source tree of 14 real photos in 3 classes plus one file of every awkward kind in a 4th class."""
    from tests.corpus import write_corpus

    root = tmp_path_factory.mktemp("source")
    for k, (_cls, data) in enumerate(real_photos(14)):
        d = root / "train" / f"n0{k % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"photo_{k:02d}.JPEG").write_bytes(data)
    expected = write_corpus(root / "train" / "n09")
    return root, expected


def make_store(root, n: int = 12, size: int = 64, seed: int = 0, **settings):
    """(store path, source root): n real photo crops as JPEGs in 3 classes, preprocessed at S = size (and the
    PreprocessConfig `settings` given)."""
    rgb, _ = photo_batch(n, 96, seed=seed)
    src = root / "source"
    for k in range(n):
        d = src / "train" / f"c{k % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[k]).save(d / f"{k:02d}.JPEG", quality=95)
    store = root / "tiny.zarr"
    cfg = PreprocessConfig(source=str(src), size=size, grayscale="include", shard_images=4, **settings)
    build_store(cfg, store)
    return store, src


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("tiny"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_home, ignore_errors=True)
