import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.store.format import StoreError, image_slots, open_store
from training.config import TrainConfig
from training.data import DataConfig, Loader, StoreData, default_threads, device_batch, holdout_mask, on_device
from training.order import epoch_sequence


def zarr_batch(path, idx: np.ndarray, flips: np.ndarray, size: int = 0) -> dict:
    """The batch as the loader built it before it read shards itself: zarr-python reads, flips, resize."""
    group = open_store(path)
    slots = image_slots(group)[idx]
    order = np.argsort(slots)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(idx))
    L, q, label = (np.asarray(group[k].oindex[slots[order]])[inv] for k in ("L", "bins", "label"))
    L_t = torch.from_numpy(L).unsqueeze(1).float().div_(255.0)
    q_t = torch.from_numpy(q.astype(np.int64))
    f = torch.from_numpy(flips)
    L_t[f], q_t[f] = L_t[f].flip(-1), q_t[f].flip(-1)
    if size and size != L.shape[-1]:
        L_t = F.interpolate(L_t, size=(size, size), mode="area")
        q_t = F.interpolate(q_t[:, None].float(), size=(size // 4, size // 4), mode="nearest")[:, 0].long()
    return {"L": L_t, "q": q_t, "label": torch.from_numpy(label.astype(np.int64))}


def random_plan(train_idx: np.ndarray, seed: int, epoch: int, b: int, k: int) -> np.ndarray:
    """The random order's batch k, derived here: a permutation per (seed, epoch), cut into ceil(T / b) batches
    whose sizes differ by at most one."""
    perm = np.random.default_rng([seed, epoch]).permutation(len(train_idx))
    steps = -(-len(train_idx) // b)
    return train_idx[perm[k * len(perm) // steps : (k + 1) * len(perm) // steps]]


def equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in b)


def test_holdout_is_fixed_and_about_the_fraction():
    m = holdout_mask(10000, 0.1)
    assert 900 < m.sum() < 1100 and np.array_equal(m, holdout_mask(10000, 0.1))
    assert np.array_equal(m[:500], holdout_mask(500, 0.1))  # a prefix keeps its split


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("order", ["random", "quasi"])
def test_batches_equal_the_zarr_python_path(tiny_store, order, in_memory):
    path, _ = tiny_store
    data = StoreData(str(path), holdout=0.2, cache_bytes=(1 << 30) if in_memory else 0)
    assert data.in_memory == in_memory
    cfg = DataConfig(batch_size=3, seed=3, order=order, window=3, loader_threads=2)  # 4 batches a fetch
    loader = Loader(data, cfg)
    batches = list(loader.epoch(1))
    assert [b for b, _ in batches] == list(range(loader.batches_per_epoch()))
    assert order == "random" or in_memory or loader._group_batches() > 1  # the per-window fetch is used
    for b, batch in batches:
        idx, flips = loader.plan(1, b)
        assert equal(device_batch(batch, torch.device("cpu")), zarr_batch(path, idx, flips))
        if order == "random":
            assert np.array_equal(idx, random_plan(data.train_idx, 3, 1, 3, b))
    seen = np.concatenate([loader.plan(1, b)[0] for b in range(loader.batches_per_epoch())])
    assert sorted(seen.tolist()) == data.train_idx.tolist()  # the epoch: every image once


@pytest.mark.parametrize("order", ["random", "quasi"])
def test_resume_and_thread_count_give_the_same_batches(tiny_store, order):
    path, _ = tiny_store
    data = StoreData(str(path), cache_bytes=0)
    full = [
        batch for _, batch in Loader(data, DataConfig(batch_size=2, order=order, window=1, loader_threads=1)).epoch(2)
    ]
    resumed = list(Loader(data, DataConfig(batch_size=2, order=order, window=1, loader_threads=3)).epoch(2, start=4))
    assert [b for b, _ in resumed] == list(range(4, len(full)))
    assert all(equal(batch, full[b]) for b, batch in resumed)


def test_resize_and_flip_on_the_device(tiny_store):
    path, _ = tiny_store
    data = StoreData(str(path), cache_bytes=0)
    loader = Loader(data, DataConfig(batch_size=4, seed=1))
    (b, host), *_ = loader.epoch(0)
    assert host["L"].dtype == torch.uint8 and host["q"].dtype == torch.int16 and host["flip"].dtype == torch.bool
    (_, moved), *_ = on_device(loader.epoch(0), torch.device("cpu"), 32)
    idx, flips = loader.plan(0, b)
    assert flips.any() and not flips.all()  # seed 1: both kinds in the batch
    assert moved["L"].shape == (4, 1, 32, 32) and moved["q"].shape == (4, 8, 8)
    assert equal(moved, zarr_batch(path, idx, flips, 32))


@pytest.mark.parametrize("order", ["random", "quasi"])
def test_ranks_split_the_batches(tiny_store, order):
    path, _ = tiny_store
    data = StoreData(str(path))
    cfg = DataConfig(batch_size=4, order=order, window=2)
    ranks = [Loader(data, cfg, r, 2) for r in range(2)]
    assert ranks[0].batches_per_epoch() == 3
    r0, r1 = (np.concatenate([rank.plan(0, b)[0] for b in range(3)]) for rank in ranks)
    assert len(set(r0) | set(r1)) == 12 and not set(r0) & set(r1)
    got = [list(rank.epoch(0)) for rank in ranks]
    for rank, batches in zip(ranks, got, strict=True):
        for b, batch in batches:
            assert equal(device_batch(batch, torch.device("cpu")), zarr_batch(path, *rank.plan(0, b)))


@pytest.mark.parametrize("order", ["random", "quasi"])
@pytest.mark.parametrize("n,batch_size", [(12, 5), (97, 8), (1000, 64), (7, 7)])
def test_the_order_and_the_batches_do_not_depend_on_the_number_of_ranks(n, batch_size, order):
    from training.order import batch_flips, batch_span, epoch_batches, rank_span

    train_idx = np.arange(0, 3 * n, 3)
    seq = epoch_sequence(train_idx, order, 5, 2, train_idx // 16, 2)
    steps = epoch_batches(n, batch_size)
    spans = [batch_span(n, batch_size, k) for k in range(steps)]
    assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    sizes = {hi - lo for lo, hi in spans}
    assert sizes <= {n // steps, -(-n // steps)} and max(sizes) <= batch_size
    for world in (1, 2, 3, 4):
        for k, (lo, hi) in enumerate(spans):  # the ranks' shares make up the batch, in order, each once
            shares = [rank_span(lo, hi, r, world) for r in range(world)]
            assert np.array_equal(np.concatenate([seq[a:b] for a, b in shares]), seq[lo:hi])
            flips = batch_flips(5, 2, k, hi - lo)
            assert np.array_equal(np.concatenate([flips[a - lo : b - lo] for a, b in shares]), flips)
            assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1


def test_quasi_order_visits_each_shard_within_one_window():
    train = np.flatnonzero(~holdout_mask(1000, 0.1))
    for window in (1, 3, 8):
        seq = epoch_sequence(train, "quasi", seed=5, epoch=2, shards=train // 16, window=window)
        assert sorted(seq.tolist()) == train.tolist()  # a permutation of the training images
        shard_order = list(dict.fromkeys((seq // 16).tolist()))  # shards by first visit
        pos = 0
        for w in range(0, len(shard_order), window):  # each window: all the images of its shards, then the next
            expect = train[np.isin(train // 16, shard_order[w : w + window])]
            got = seq[pos : pos + len(expect)]
            assert sorted(got.tolist()) == expect.tolist()
            assert window == 1 or not np.array_equal(got, expect)  # shuffled inside the window
            pos += len(expect)
        assert pos == len(seq)
    assert shard_order != sorted(shard_order)
    assert not np.array_equal(seq, epoch_sequence(train, "quasi", seed=5, epoch=3, shards=train // 16, window=8))


@pytest.mark.parametrize("order", ["random", "quasi"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "index"])
def test_a_damaged_shard_raises_naming_shard_and_image(tiny_store, tmp_path, damage, order):
    path, _ = tiny_store
    store = tmp_path / "damaged.zarr"
    shutil.copytree(path, store)
    data = StoreData(str(store), cache_bytes=0)  # opened intact: the damage comes while training
    shard = store / "L" / "c" / "1" / "0" / "0"  # images 4..7
    raw = bytearray(shard.read_bytes())
    if damage == "flip":
        raw[100] ^= 0xFF
        shard.write_bytes(bytes(raw))
    elif damage == "truncate":
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "index":
        raw[-10] ^= 0xFF
        shard.write_bytes(bytes(raw))
    else:
        shard.unlink()
    loader = Loader(data, DataConfig(batch_size=2, flip=False, loader_threads=2, order=order, window=3))
    with pytest.raises(StoreError, match=r"L/c/1/0/0.*image [4-7]|image [4-7].*L/c/1/0/0"):
        list(loader.epoch(0))


def test_a_codec_chain_the_reader_does_not_know_is_refused_by_name(tiny_store, tmp_path):
    """A store whose L is coded by another chain (as earlier formats were) is refused, naming the array, rather
    than read slowly or wrongly; zarr-python still reads it."""
    import zarr

    path, _ = tiny_store
    store = tmp_path / "other.zarr"
    shutil.copytree(path, store)
    L = np.asarray(zarr.open_group(path, mode="r")["L"][:])
    group = zarr.open_group(store, mode="r+")
    del group["L"]
    group.create_array("L", shape=L.shape, dtype=L.dtype, chunks=(1, *L.shape[1:]), shards=(4, *L.shape[1:]))
    group["L"][:] = L
    with pytest.raises(StoreError, match="array L has a codec chain"):
        StoreData(str(store), cache_bytes=0)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["L"][:], L)


def test_settings_are_checked(tmp_path):
    with pytest.raises(StoreError, match="zarr.json"):
        StoreData(str(tmp_path))
    with pytest.raises(ValueError, match="at least 32"):
        TrainConfig(store="x", size=16)
    with pytest.raises(ValueError, match="order"):
        DataConfig(order="sorted")
    assert default_threads(1) >= 1 and default_threads(64) == 1
