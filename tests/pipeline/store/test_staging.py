"""A part's work in the store: its shards written whole with empty slots for skipped sources, its summary staged
last, and plain zarr-python reading every slot (an empty one as the fill value)."""

import json

import numpy as np
import pytest
import zarr

from pipeline.build import build_store
from pipeline.config import PreprocessConfig
from pipeline.store.arrays import array_codecs
from pipeline.store.chunks import shard_file
from pipeline.store.format import image_slots, open_store, shard_key, staging_dir
from pipeline.store.shards import create_arrays, slot_shards, write_shard
from pipeline.store.staging import load_part, part_done, save_part, staged_summary

SHARD = 4


def test_a_staged_summary_reads_back_and_marks_the_part_done(tmp_path):
    store = tmp_path / "s.zarr"
    staging_dir(store).mkdir(parents=True)
    records = [
        {"path": "a.jpg", "outcome": "stored", "slot": 8},
        {"path": "b.jpg", "outcome": "skipped", "kind": "empty", "reason": "an empty file"},
    ]
    assert not part_done(store, 2)
    save_part(store, 2, np.arange(313), records)
    assert part_done(store, 2)
    part = load_part(store, 2)
    assert part.stored == 1 and part.records == records and (part.counts == np.arange(313)).all()
    assert staged_summary(str(store), 2)["stored"] == 1
    assert json.loads((store / "_staging" / "part-000002.json").read_text())["records"] == records  # plain JSON


def test_shards_with_empty_slots_read_as_the_fill_value(photos, tmp_path):
    store = tmp_path / "s.zarr"
    staging_dir(store).mkdir(parents=True)  # where a run keeps its temp files
    create_arrays(store, 10, 96, SHARD, 1)
    L, present = photos[..., 1], [0, 2, 3, 5, 9]  # slots 1, 4, 6, 7, 8 are empty
    codecs = {"L": array_codecs("L", np.uint8, 1), "label": array_codecs("label", np.int16, 1)}
    for shard in slot_shards(0, 10, SHARD):
        slots = range(shard * SHARD, min(10, (shard + 1) * SHARD))
        chunks = {name: [c.encode(L[s % 8] if name == "L" else np.int16(s)) if s in present else None for s in slots]
                  for name, c in codecs.items()}  # fmt: skip
        write_shard(store, shard, SHARD, chunks)
    group = zarr.open_group(store, mode="r")
    for s in range(10):
        want_L = L[s % 8] if s in present else np.zeros_like(L[0])
        np.testing.assert_array_equal(group["L"][s], want_L)
        assert group["label"][s] == (s if s in present else -1)
    assert (store / shard_key("L", 1)).read_bytes() == shard_file([None, codecs["L"].encode(L[5]), None, None], SHARD)


@pytest.fixture(scope="module")
def built(mixed_source, tmp_path_factory):
    """The mixed source (real photos and a file of every awkward kind) built in parts of two shards."""
    source, _ = mixed_source
    store = tmp_path_factory.mktemp("built") / "s.zarr"
    build_store(PreprocessConfig(source=str(source), part_images=8, shard_images=SHARD), store)
    return store


def test_images_lie_at_their_slots_and_skips_leave_them_empty(built):
    group = open_store(built)
    records = [json.loads(line) for line in (built / "sources.jsonl").read_text().splitlines()]
    stored = [r for r in records if r["outcome"] == "stored"]
    slots = image_slots(group)
    assert slots.tolist() == [r["slot"] for r in stored] and (np.diff(slots) > 0).all()
    assert group.attrs["n_slots"] == group["L"].shape[0] > len(slots)  # some sources were skipped
    empty = np.setdiff1d(np.arange(group.attrs["n_slots"]), slots)
    assert (group["label"].oindex[empty] == -1).all() and not group["L"].oindex[empty].any()
    assert (group["L"].oindex[slots].reshape(len(slots), -1).max(1) > 0).all()  # every stored image has pixels


def test_every_part_owns_whole_shards(built):
    cfg = open_store(built).attrs["config"]
    assert cfg["part_images"] % cfg["shard_images"] == 0
    assert PreprocessConfig(source=".", part_images=5, shard_images=4).part_images == 5  # rounded when resolved
