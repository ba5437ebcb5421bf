import numpy as np
import pytest
import torch

from pipeline.store import StoreError
from training.data import DataConfig, Loader, StoreData, holdout_mask


def test_holdout_is_fixed_and_about_the_fraction():
    m = holdout_mask(10000, 0.1)
    assert 900 < m.sum() < 1100 and np.array_equal(m, holdout_mask(10000, 0.1))
    assert np.array_equal(m[:500], holdout_mask(500, 0.1))  # a prefix keeps its split


def test_batches_are_deterministic_and_flips_match(tiny_store):
    path, _ = tiny_store
    data = StoreData(str(path), holdout=0.0)
    cfg = DataConfig(str(path), batch_size=4, seed=3)
    a = [b for _, b in Loader(data, cfg).epoch(1)]
    b = [b for _, b in Loader(data, cfg).epoch(1)]
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)
    idx, flips = Loader(data, cfg).plan(1, 0)
    L, q, _ = data.read(idx)
    batch = a[0]
    for i in range(4):
        want_L = torch.from_numpy(L[i]).float() / 255
        want_q = torch.from_numpy(q[i].astype(np.int64))
        if flips[i]:
            want_L, want_q = want_L.flip(-1), want_q.flip(-1)
        assert torch.equal(batch["L"][i, 0], want_L) and torch.equal(batch["q"][i], want_q)
    resumed = [b for _, b in Loader(data, cfg).epoch(1, start=2)]
    assert all(torch.equal(resumed[0][k], a[2][k]) for k in a[2])


def test_ranks_split_the_batches(tiny_store):
    path, _ = tiny_store
    data = StoreData(str(path))
    cfg = DataConfig(str(path), batch_size=2)
    r0 = np.concatenate([Loader(data, cfg, 0, 2).plan(0, b)[0] for b in range(3)])
    r1 = np.concatenate([Loader(data, cfg, 1, 2).plan(0, b)[0] for b in range(3)])
    assert len(set(r0) | set(r1)) == 12 and not set(r0) & set(r1)


def test_resize_option(tiny_store):
    path, _ = tiny_store
    data = StoreData(str(path))
    (_, batch), *_ = Loader(data, DataConfig(str(path), batch_size=2, size=32)).epoch(0)
    assert batch["L"].shape == (2, 1, 32, 32) and batch["q"].shape == (2, 8, 8)


def test_incomplete_or_missing_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="zarr.json"):
        StoreData(str(tmp_path))
    with pytest.raises(ValueError, match="multiple of 32"):
        DataConfig("x", size=40)
