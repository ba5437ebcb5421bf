"""Fault injection: killed runs, damaged stores, readers during writes, bad configurations, training faults.

Everything real: the flow runs as `python -m flows.preprocess` (Prefect, Dask workers) and is killed with
SIGKILL on its whole process group; stores are damaged on disk; training is killed the same way.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import check
from pipeline.store.format import MANIFEST, StoreError, open_store

pytestmark = [pytest.mark.slow, pytest.mark.dali]
FLOW_OPTS = ["--part-images", "5", "--shard-images", "4", "--workers", "2"]


def flow_cmd(source, store, *extra) -> list[str]:
    return [sys.executable, "-m", "flows.preprocess", str(source), str(store), *FLOW_OPTS, *extra]


def checksums(store: Path, tmp: Path) -> dict:
    """Quality check of a store (must pass) and its per-array sha256, as the report gives them."""
    assert check.main([str(store), "--out", str(tmp), "--sample", "4"]) == 0
    report = json.loads((tmp / f"{store.name}.quality.json").read_text())
    return report["sha256"]


@pytest.fixture(scope="module")
def clean(mixed_source, tmp_path_factory):
    """The store of an uninterrupted run, and its checksums."""
    source, _ = mixed_source
    tmp = tmp_path_factory.mktemp("clean")
    store = tmp / "clean.zarr"
    subprocess.run(flow_cmd(source, store), check=True, capture_output=True)
    return store, checksums(store, tmp)


def files_in(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def test_killed_five_times_resumes_to_the_clean_store(mixed_source, clean, tmp_path):
    source, _ = mixed_source
    store = tmp_path / "killed.zarr"
    rng = random.Random(5)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(
            flow_cmd(source, store), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 14.0))  # start-up, staging, shard writing or finalising
        if proc.poll() is not None:  # finished before the kill: start again from a fresh store
            subprocess.run(["rm", "-rf", str(store)], check=True)
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(flow_cmd(source, store), check=True, capture_output=True)
    assert checksums(store, tmp_path) == clean[1]
    assert (store / MANIFEST).read_text() == (clean[0] / MANIFEST).read_text()
    assert files_in(store) == files_in(clean[0])  # no temp file of a write cut short left among the arrays
    indices = [json.loads(line).get("index") for line in (store / MANIFEST).read_text().splitlines()]
    stored = [i for i in indices if i is not None]
    assert stored == list(range(len(stored)))  # no duplicate, no gap


def test_every_good_photo_equals_a_clean_run_of_the_photos_alone(mixed_source, clean, tmp_path):
    import shutil

    import zarr

    source, expected = mixed_source
    photos_only = tmp_path / "photos"
    for f in (source / "train").glob("n0[0-2]/*"):
        (photos_only / "train" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, photos_only / "train" / f.parent.name / f.name)
    store = tmp_path / "photos.zarr"
    subprocess.run(flow_cmd(photos_only, store), check=True, capture_output=True)
    a, b = zarr.open_group(clean[0], mode="r"), zarr.open_group(store, mode="r")
    index_a = {str(p): i for i, p in enumerate(a["path"][:])}
    assert len(index_a) == len(b["path"][:]) + sum(v == "stored" for v in expected.values())
    for j, p in enumerate(b["path"][:]):
        i = index_a[str(p)]
        assert np.array_equal(a["L"][i], b["L"][j]) and np.array_equal(a["bins"][i], b["bins"][j])


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_shard_is_named_by_quality_and_refused_by_training(clean, tmp_path, damage, capsys):
    import shutil

    from training.data import StoreData

    store = tmp_path / "damaged.zarr"
    shutil.copytree(clean[0], store)
    shard = store / "L" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        for k in range(100, len(data) - 100, max(1, len(data) // 20)):
            data[k] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    else:
        shard.unlink()
    assert check.main([str(store), "--out", str(tmp_path), "--sample", "2"]) == 1
    err = capsys.readouterr().err
    assert "L/c/1" in err
    with pytest.raises(StoreError, match="L/c/1|cannot read"):
        StoreData(str(store))


def test_reader_during_the_write_sees_nothing_or_the_finished_store(mixed_source, clean, tmp_path):
    source, _ = mixed_source
    store = tmp_path / "live.zarr"
    proc = subprocess.Popen(flow_cmd(source, store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    refused, opened = 0, None
    while proc.poll() is None:
        try:
            opened = open_store(store)
            break
        except StoreError as e:
            assert "zarr.json" in str(e) or "incomplete" in str(e)
            refused += 1
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == 0 and refused > 10
    g = opened if opened is not None else open_store(store)
    assert np.array_equal(g["L"][:], open_store(clean[0])["L"][:])


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/dir", "{tmp}/s.zarr"], "no split folder"),
        (["{src}", "{tmp}/s.zarr", "--size", "30"], "multiple of 4"),
        (["{src}", "{tmp}/s.zarr", "--part-images", "0"], "must be >= 1"),
        (["{empty}", "{tmp}/s.zarr"], "no files"),
        (["{src}", "{tmp}/s.zarr", "--dask-address", "tcp://127.0.0.1:9"], "no Dask scheduler"),
    ],
)
def test_bad_flow_configuration_exits_2_with_one_line(mixed_source, tmp_path, args, message):
    source, _ = mixed_source
    (tmp_path / "empty" / "train" / "n01").mkdir(parents=True)
    args = [a.format(tmp=tmp_path, src=source, empty=tmp_path / "empty") for a in args]
    r = subprocess.run([sys.executable, "-m", "flows.preprocess", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "s.zarr").exists()  # nothing half-written


def test_unknown_options_exit_2(tmp_path):
    for module in ("flows.preprocess", "training.run", "pipeline.check"):
        r = subprocess.run([sys.executable, "-m", module, "--bogus"], capture_output=True, text=True)
        assert r.returncode == 2, module
    r = subprocess.run(
        [sys.executable, "-m", "training.run", "--store", str(tmp_path), "--size", "16"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "at least 32" in r.stderr


def test_training_killed_and_resumed_matches_uninterrupted(clean, tmp_path):
    from training import checkpoint

    store = clean[0]
    common = ["--store", str(store), "--width", "0.125", "--size", "64", "--batch-size", "4", "--steps", "40"]
    common += ["--ckpt-every", "5", "--holdout", "0", "--log-every", "1"]
    run = [sys.executable, "-m", "training.run"]
    subprocess.run([*run, *common, "--out", str(tmp_path / "a")], check=True, capture_output=True)
    proc = subprocess.Popen([*run, *common, "--out", str(tmp_path / "b")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = tmp_path / "b" / "checkpoint-last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (ckpt.is_file() and checkpoint.load(ckpt)["step"] >= 10):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(ckpt)["step"]
    assert 10 <= killed_at < 40
    subprocess.run([*run, *common, "--out", str(tmp_path / "b"), "--resume"], check=True, capture_output=True)
    a, b = checkpoint.load(tmp_path / "a" / "checkpoint-last.pt"), checkpoint.load(ckpt)
    assert a["step"] == b["step"] == 40
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    rows = {}
    for name in ("a", "b"):
        lines = (tmp_path / name / "metrics.csv").read_text().splitlines()[1:]
        rows[name] = {int(r.split(",")[0]): float(r.split(",")[3]) for r in lines}  # last row of a step wins
    assert rows["a"].keys() == rows["b"].keys()
    assert all(abs(rows["a"][k] - rows["b"][k]) <= 1e-3 * max(1.0, rows["a"][k]) for k in rows["a"])


def test_full_disk_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    from training import checkpoint

    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"step": 1, "model": {"w": torch.ones(3)}, "config": {}})

    def full_disk(obj, f):
        f.write(b"\0" * 1000)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(path, {"step": 2, "model": {"w": torch.zeros(3)}, "config": {}})
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind
