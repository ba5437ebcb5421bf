"""Staged parts: a summary and a chunks file; the chunks go once every shard over them is written, never before."""

import numpy as np
import pytest
import zarr

from pipeline.store.chunks import array_codecs, encode_images
from pipeline.store.format import StoreError, staging_dir
from pipeline.store.shards import create_arrays, write_shard
from pipeline.store.staging import load_part, part_chunks_path, part_done, part_path, save_part

SHARD = 4
SIZE = 96


def stage(store, part: int, L: np.ndarray, labels: np.ndarray) -> None:
    bins = (L[:, ::4, ::4].astype(np.int16) % 313).astype(np.int16)
    arrays = {"L": L, "bins": bins, "label": labels}
    chunks = {name: encode_images(array_codecs(name, a.dtype, 1), a) for name, a in arrays.items()}
    counts = np.bincount(bins.ravel(), minlength=313)
    records = [{"path": f"p{part}/{i}.jpg", "outcome": "stored"} for i in range(len(L))]
    save_part(store, part, chunks, counts, records)


@pytest.fixture
def staged(photos, tmp_path):
    """Three parts of 3, 6 and 3 images over shards of 4: part 1 spans shards 0, 1 and 2."""
    store = tmp_path / "s.zarr"
    staging_dir(store).mkdir(parents=True)
    L = np.concatenate([photos[..., 1], photos[..., 2]])[:12]  # (12, 96, 96): green, then blue channels
    labels = np.arange(12, dtype=np.int16)
    layout, first = [], 0
    for part, n in enumerate((3, 6, 3)):
        stage(store, part, L[first : first + n], labels[first : first + n])
        layout.append((part, first, n))
        first += n
    create_arrays(store, 12, SIZE, False, SHARD, 1)
    return store, layout, L, labels


def test_a_part_reads_back_with_and_without_its_chunks(staged):
    store, _, L, _ = staged
    part = load_part(store, 1)
    assert part.stored == 6 and part.names == ["L", "bins", "label"]
    assert [r["path"] for r in part.records] == [f"p1/{i}.jpg" for i in range(6)]
    want = encode_images(array_codecs("L", np.uint8, 1), L[3:9])
    assert b"".join(bytes(part.chunk("L", i)) for i in range(6)) == want[0].tobytes()
    summary = load_part(store, 1, chunks=False)
    assert summary.blobs is None and summary.stored == 6 and (summary.counts == part.counts).all()


def test_chunks_are_freed_only_when_every_shard_over_them_is_written(staged):
    store, layout, L, labels = staged
    loaded: dict = {}
    write_shard(store, 0, SHARD, layout, loaded)  # images 0-3: part 0 is done with, part 1 is not
    assert not part_chunks_path(store, 0).exists() and part_chunks_path(store, 1).exists()
    assert sorted(loaded) == [1]
    write_shard(store, 1, SHARD, layout, loaded)  # images 4-7: part 1 still has image 8 in shard 2
    assert part_chunks_path(store, 1).exists() and part_chunks_path(store, 2).exists()
    write_shard(store, 2, SHARD, layout, loaded)
    assert not any(part_chunks_path(store, k).exists() for k in range(3)) and not loaded
    assert all(part_done(store, k) and part_path(store, k).exists() for k in range(3))  # summaries stay
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["L"][:], L)
    np.testing.assert_array_equal(group["label"][:], labels)


def test_a_resumed_writer_reads_the_chunks_it_still_needs(staged):
    store, layout, L, _ = staged
    write_shard(store, 0, SHARD, layout, {})  # a run killed after shard 0: a new run starts with nothing loaded
    loaded: dict = {}
    write_shard(store, 1, SHARD, layout, loaded)
    write_shard(store, 2, SHARD, layout, loaded)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["L"][:], L)


def test_a_shard_over_freed_chunks_is_refused_not_written_empty(staged):
    store, layout, _, _ = staged
    write_shard(store, 0, SHARD, layout, {})
    (staging_dir(store) / "shard-000000.done").unlink()  # as if the marker were lost after the chunks went
    with pytest.raises(StoreError, match="no chunks left"):
        write_shard(store, 0, SHARD, layout, {})
