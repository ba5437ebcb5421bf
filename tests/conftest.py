"""Shared fixtures: real photographs (shared ImageNet sample or the embedded default) and all 2^24 colours."""

import numpy as np
import pytest

from pipeline.sources import photo_batch


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
