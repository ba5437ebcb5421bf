"""A tiny real store -- real photos saved as JPEGs, run through the pipeline's stages -- for training tests."""

import numpy as np
import pytest
from PIL import Image

from kernels.gamut import Q
from pipeline.discover import discover
from pipeline.preprocess import PreprocessConfig, process_part
from pipeline.sources import photo_batch
from pipeline.store import begin, create_arrays, finalize, write_shard


def make_store(root, n: int = 12, size: int = 64, seed: int = 0):
    """(store path, source root): n real photo crops as JPEGs in 3 classes, preprocessed at S = size."""
    rgb, _ = photo_batch(n, 96, seed=seed)
    src = root / "source"
    for k in range(n):
        d = src / "train" / f"c{k % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[k]).save(d / f"{k:02d}.JPEG", quality=95)
    cfg = PreprocessConfig(source=str(src), size=size, grayscale="include", shard_images=4)
    store = root / "tiny.zarr"
    begin(store, cfg)
    sources, classes = discover(src, "train")
    summary = process_part(cfg, str(store), 0, sources, "cpu")
    n_stored = summary["stored"]
    create_arrays(store, n_stored, size, False, 4, 1)
    for k in range(-(-n_stored // 4)):
        write_shard(store, k, 4, [(0, 0, n_stored)])
    records = summary["records"]
    for i, r in enumerate(records):
        r["index"] = i
    finalize(store, cfg, records, np.asarray(summary["counts"]).reshape(Q), classes)
    return store, src


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("tiny"))
