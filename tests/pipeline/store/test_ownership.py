"""A store folder shared with other people's files and other writers: `--overwrite` deletes only what the store's
metadata accounts for, at any depth; one writer at a time holds the store's lease; and hostile metadata is refused
in one line with bounded memory (property-based)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.build import build_store
from pipeline.storage import lease
from pipeline.store.format import StoreError, open_store, staging_dir
from pipeline.store.lifecycle import LEASE_KEY
from pipeline.store.ownership import chunk_grids, is_own
from pipeline.store.reader import ShardReader
from tests.stores import killed_build, small_cfg, snapshot


@pytest.mark.parametrize("planted", ["label/c/sub/KEEPME.txt", "bins/c/0/KEEPME", "_staging/KEEPME.txt",
                                     "L/c/\uff11/0/0", "label/c/\u0663", "L/c/\u00b2/0/0",  # digits, not ASCII
                                     "L/c/99/0/0", "L/c/0/0/x", "L/c/01/0/0", "bins/KEEPME/", "notes.txt",
                                     "_staging/parts/sub/x", "weights/c/1", "link"])  # fmt: skip
def test_overwrite_deletes_nothing_when_anything_foreign_lies_at_any_depth(planted, source, tmp_path):
    store = tmp_path / "s.zarr"
    build_store(small_cfg(source), store)
    target = store / planted
    if planted == "link":
        os.symlink(tmp_path / "photos", target)  # a link named like nothing of the store's, to a folder
    elif planted.endswith("/"):
        target.mkdir(parents=True)
    elif target.is_dir():
        target = target / "x"
        target.write_bytes(b"mine")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"mine")
    before = snapshot(store)
    with pytest.raises(StoreError, match="not the store's own") as refused:
        build_store(small_cfg(source, size=64), store, overwrite=True)
    assert planted.rstrip("/") in str(refused.value) and "\n" not in str(refused.value)
    assert snapshot(store) == before
    assert open_store(store).attrs["S"] == 32  # the store itself is as it was


def test_a_killed_writers_temp_files_are_the_stores_own(source, tmp_path):
    store = tmp_path / "s.zarr"
    build_store(small_cfg(source), store)
    staging_dir(store).mkdir()
    (staging_dir(store) / ".0.tmp123-456").write_bytes(b"half a shard")
    (store / "zarr.0123456789abcdef0123456789abcdef.partial").write_bytes(b"{")
    (store / "L" / "c" / "0" / "0" / "0.0123456789abcdef0123456789abcdef.partial").write_bytes(b"x")
    build_store(small_cfg(source, size=64), store, overwrite=True)
    assert open_store(store).attrs["S"] == 64
    assert not list(store.rglob("*.partial")) and not staging_dir(store).exists()


def test_a_foreign_file_in_the_staging_area_outlives_the_run(source, tmp_path):
    store = tmp_path / "s.zarr"
    settings = killed_build(source, store)
    (staging_dir(store) / "KEEPME.txt").write_text("mine")
    build_store(settings, store)  # resumed and finished: its own staging files go, the foreign one stays
    assert open_store(store).attrs["complete"]
    assert [p.name for p in staging_dir(store).iterdir()] == ["KEEPME.txt"]
    with pytest.raises(StoreError, match="_staging/KEEPME.txt"):
        build_store(settings, store, overwrite=True)


def test_the_chunk_grid_comes_from_each_arrays_own_metadata(tiny_store):
    grids = chunk_grids(tiny_store[0])
    assert grids["L"] == (3, 1, 1) and grids["label"] == (3,)  # 12 slots in shards of 4
    assert is_own("L/c/2/0/0", grids) and not is_own("L/c/3/0/0", grids) and not is_own("L/c/2/0", grids)
    assert not is_own("L/c/2/0/0/x", grids) and not is_own("L/c/-1/0/0", grids) and not is_own("zarr.json/x", grids)
    assert is_own("_staging/part-000003.json", grids) and not is_own("_staging/part-3.pkl", grids)


def record(host: str, pid: int, beat_ago: float) -> bytes:
    now = time.time()
    return json.dumps({"owner": "someone-else", "host": host, "pid": pid, "what": "colorize-preprocess",
                       "since": now - 600, "beat": now - beat_ago}).encode()  # fmt: skip


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("who", ["live here", "live elsewhere", "dead here", "silent elsewhere", "not a lease",
                                 "forged pid", "pid 0", "from the future"])  # fmt: skip
def test_one_writer_a_store_a_gone_writers_lease_is_taken_over(who, source, tmp_path, caplog):
    store = tmp_path / "s.zarr"
    (store / "_staging").mkdir(parents=True)
    here = socket.gethostname()
    planted = {"live here": record(here, os.getpid(), 1), "live elsewhere": record("node7", 4242, 1),
               "dead here": record(here, dead_pid(), 1), "silent elsewhere": record("node7", 4242, 3600),
               "not a lease": b"[1, 2", "forged pid": record(here, 2**70, 1), "pid 0": record(here, 0, 1),
               "from the future": record("node7", 4242, -3600)}[who]  # fmt: skip
    (store / LEASE_KEY).write_bytes(planted)
    if who.startswith("live"):
        with pytest.raises(lease.LeaseHeld, match="being written by pid") as refused:
            build_store(small_cfg(source), store)
        assert "node7" in str(refused.value) or here in str(refused.value)
        assert (store / LEASE_KEY).read_bytes() == planted and not (store / "zarr.json").exists()
        return
    build_store(small_cfg(source), store)
    assert open_store(store).attrs["complete"] and not (store / LEASE_KEY).exists()
    assert "taking over the lease" in caplog.text


def test_a_writer_whose_lease_was_taken_over_stops(source, tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "BEAT", 0.05)
    store = tmp_path / "s.zarr"

    def taken_over(done, total):  # another writer takes the lease (this one looked dead to it)
        (store / LEASE_KEY).write_bytes(record("node7", 4242, 0))
        time.sleep(0.3)  # a heartbeat or two

    with pytest.raises(lease.LeaseLost, match="taken over"):
        build_store(small_cfg(source, part_images=4), store, progress=taken_over)
    assert not json.loads((store / "zarr.json").read_text())["attributes"]["complete"]
    assert json.loads((store / LEASE_KEY).read_text())["owner"] == "someone-else"  # the new holder's, kept


def test_a_task_of_a_run_that_lost_the_store_writes_nothing(source, tmp_path):
    from pipeline.build import resolve, stage_part
    from pipeline.store.staging import part_done

    store = tmp_path / "s.zarr"
    settings, _ = resolve(killed_build(source, store))
    (store / LEASE_KEY).write_bytes(record("node7", 4242, 0))  # another run holds the store now
    part = next(k for k in range(3) if not part_done(store, k))
    before = snapshot(store)
    with pytest.raises(lease.LeaseLost, match="no longer holds"):
        stage_part(settings, str(store), str(staging_dir(store) / "parts"), part, "cpu", 1, owner="the-old-run")
    assert not part_done(store, part) and snapshot(store) == before


@pytest.mark.parametrize("kind", ["fifo", "folder", "link"])
@pytest.mark.parametrize("where", ["store", "run folder"])
def test_a_planted_lease_that_is_no_file_is_refused_in_one_line(kind, where, source, tmp_path):
    folder = tmp_path / ("s.zarr/_staging" if where == "store" else "run")
    folder.mkdir(parents=True)
    (tmp_path / "elsewhere.json").write_text("{}")
    planted = folder / "lease.json"
    {"fifo": lambda: os.mkfifo(planted), "folder": planted.mkdir,
     "link": lambda: planted.symlink_to(tmp_path / "elsewhere.json")}[kind]()  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(lease.LeaseHeld, match="where a lease belongs") as refused:
        if where == "store":
            build_store(small_cfg(source), tmp_path / "s.zarr")
        else:
            lease.Lease(planted, "colorize-train", "--out run").acquire()
    assert time.monotonic() - t0 < 10 and "\n" not in str(refused.value)
    assert (tmp_path / "elsewhere.json").read_text() == "{}" and os.path.lexists(planted)


def test_a_linked_staging_folder_is_refused_and_what_it_points_to_is_untouched(source, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "lease.json").write_text('{"app": "x"}')
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "_staging").symlink_to(victim)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="is a link"):
            build_store(small_cfg(source), tmp_path / "s.zarr", overwrite=overwrite)
    assert [p.name for p in victim.iterdir()] == ["lease.json"] and "app" in (victim / "lease.json").read_text()


@pytest.mark.parametrize("edit", ["record without outcome", "records not dicts", "counts too short",
                                  "slot out of its part", "slots not increasing", "skip without a kind"])  # fmt: skip
def test_a_damaged_staged_summary_is_refused_in_one_line_before_anything(edit, source, tmp_path):
    from pipeline.store.lifecycle import check_staging
    from pipeline.store.staging import part_path

    store = tmp_path / "s.zarr"
    settings = killed_build(source, store)
    staged = json.loads(part_path(store, 0).read_text())
    stored = [r for r in staged["records"] if r["outcome"] == "stored"]
    if edit == "record without outcome":
        staged["records"][0] = {"x": 1}
    elif edit == "records not dicts":
        staged["records"] = [1, 2]
    elif edit == "counts too short":
        staged["counts"] = [1, 2, 3]
    elif edit == "slot out of its part":
        stored[0]["slot"] = 2**62
    elif edit == "slots not increasing":
        stored[1]["slot"] = stored[0]["slot"]
    else:
        staged["records"][0] = {"path": "a.jpg", "outcome": "skipped"}
    part_path(store, 0).write_text(json.dumps(staged))
    with pytest.raises(StoreError, match="staged summary of part 0 is damaged") as refused:
        check_staging(store)  # what the command runs before the flow
    assert "\n" not in str(refused.value)
    with pytest.raises(StoreError, match="staged summary of part 0 is damaged"):
        build_store(settings, store)


# -- hostile metadata, property-based -------------------------------------------------------------------------------

HUGE = st.sampled_from([10**9, 10**12, 2**63, 2**64 + 5, -1, 0, 1.5, "12", None, [3], True, float("inf")])
NUMBER = st.one_of(st.integers(-(2**70), 2**70), HUGE)


@pytest.fixture(scope="module")
def pristine(tiny_store):
    return tiny_store[0]


@given(attrs=st.fixed_dictionaries({}, optional={"n_images": NUMBER, "n_slots": NUMBER, "S": NUMBER}),
       array=st.sampled_from(["L", "bins", "label", "slots"]), shape0=st.one_of(st.none(), NUMBER),
       per_shard=st.one_of(st.none(), NUMBER))  # fmt: skip
@example(attrs={}, array="L", shape0=10**9, per_shard=None)
@example(attrs={"n_images": 10**12}, array="L", shape0=None, per_shard=None)
@example(attrs={}, array="L", shape0=None, per_shard=10**9)
@example(attrs={"n_images": 10**9, "n_slots": 10**9}, array="label", shape0=10**9, per_shard=None)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_metadata_is_refused_in_one_line_with_bounded_memory(pristine, tmp_path_factory, attrs, array,
                                                                     shape0, per_shard):  # fmt: skip
    store = tmp_path_factory.mktemp("hostile") / "s.zarr"
    shutil.copytree(pristine, store)
    group = json.loads((store / "zarr.json").read_text())
    group["attributes"] |= attrs
    (store / "zarr.json").write_text(json.dumps(group))
    meta = json.loads((store / array / "zarr.json").read_text())
    if shape0 is not None:
        meta["shape"][0] = shape0
    if per_shard is not None:
        meta["chunk_grid"]["configuration"]["chunk_shape"][0] = per_shard
    (store / array / "zarr.json").write_text(json.dumps(meta))
    tracemalloc.start()
    try:
        reader = ShardReader(store)
        reader.read(np.arange(min(reader.n, 4)))
    except StoreError as e:
        assert "\n" not in str(e) and str(store) in str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_huge_consistent_counts_over_empty_shards_are_refused_with_bounded_memory(pristine, tmp_path):
    """n_images = n_slots = 2^28 with every shape agreeing, and each of the 4,096 shard files it needs planted
    empty: the slots would take 2 GB; the shards, shorter than their own index, back none of it."""
    from pipeline.check import run as quality

    store, n, per = tmp_path / "s.zarr", 1 << 28, 1 << 16
    shutil.copytree(pristine, store)
    group = json.loads((store / "zarr.json").read_text())
    group["attributes"] |= {"n_images": n, "n_slots": n}
    (store / "zarr.json").write_text(json.dumps(group))
    for name in ("L", "bins", "label", "slots", "path"):
        meta = json.loads((store / name / "zarr.json").read_text())
        meta["shape"][0] = n
        meta["chunk_grid"]["configuration"]["chunk_shape"][0] = per if name in ("L", "bins", "label") else n
        (store / name / "zarr.json").write_text(json.dumps(meta))
        for k in range(n // per if name in ("L", "bins", "label") else 0):
            key = store / name / "c" / str(k) / ("0/0" if name != "label" else "")
            key.parent.mkdir(parents=True, exist_ok=True)
            (key if name != "label" else store / name / "c" / str(k)).touch()
    tracemalloc.start()
    try:
        with pytest.raises(StoreError, match="shard file"):
            ShardReader(store)
        report, _ = quality(store)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert not report.ok and peak < 64 << 20, peak


def test_slots_out_of_range_fail_the_quality_check_without_a_traceback(pristine, tmp_path):
    import zarr

    from pipeline.check import run as quality

    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    zarr.open_group(str(store), mode="r+")["slots"][0] = 2**62
    report, _ = quality(store)
    assert not report.ok and any(c["check"].startswith("slots") and not c["ok"] for c in report.checks)
