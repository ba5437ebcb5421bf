"""The flow end to end on real photos mixed with awkward files: real Prefect, real Dask, real Zarr."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import check
from pipeline.store.format import MANIFEST, StoreError, open_store

pytestmark = [pytest.mark.slow, pytest.mark.dali]
OPTS = {"part_images": 5, "shard_images": 4, "workers": 2}


def run_flow(source, store, **kw):
    from flows.preprocess import preprocess_imagenet

    return preprocess_imagenet(source=str(source), store=str(store), **(OPTS | kw))


def arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, mode="r")
    out = {name: np.asarray(g[name][:]) for name in ("L", "bins", "label", "prior", "weights")}
    out["path"] = np.array([str(p) for p in g["path"][:]])
    return out


@pytest.fixture(scope="module")
def clean_store(mixed_source, tmp_path_factory):
    source, _ = mixed_source
    store = tmp_path_factory.mktemp("clean") / "train.zarr"
    result = run_flow(source, store)
    return store, result


def test_every_file_stored_or_skipped_with_its_reason(mixed_source, clean_store):
    _, expected = mixed_source
    store, result = clean_store
    records = {Path(r["path"]).name: r for r in map(json.loads, (store / MANIFEST).read_text().splitlines())}
    for name, want in expected.items():
        r = records[name]
        got = "stored" if r["outcome"] == "stored" else r["kind"]
        assert got == want, (name, r)
        assert r["outcome"] == "stored" or r["reason"]
    photos = [r for name, r in records.items() if name.startswith("photo_")]
    grey_photos = [r for r in photos if r["outcome"] != "stored"]
    assert all(r["kind"] == "grayscale" for r in grey_photos)  # a real photo is lost only for being gray
    n = sum(r["outcome"] == "stored" for r in records.values())
    group = open_store(store)
    assert result["n_images"] == n == group["slots"].shape[0] and group["L"].shape[0] == group.attrs["n_slots"]


def test_quality_check_passes(clean_store, tmp_path):
    from benchmarks.photos import zhang_prior

    store, _ = clean_store
    prior = zhang_prior()
    extra = ["--zhang-prior", str(prior)] if prior else []
    assert check.main([str(store), "--out", str(tmp_path), "--sample", "6", *extra]) == 0
    assert (tmp_path / "train.zarr.quality.png").stat().st_size > 1000
    report = json.loads((tmp_path / "train.zarr.quality.json").read_text())
    assert report["ok"] and len(report["checks"]) > 15
    assert (report["kl_prior_vs_zhang"] is not None) == bool(prior)


def test_store_layout(clean_store):
    store, _ = clean_store
    g = open_store(store)
    n, slots = g.attrs["n_images"], g.attrs["n_slots"]
    assert g["slots"].shape == (n,) and g["slots"].dtype == np.int64 and slots > n  # skipped sources leave slots
    assert g["L"].shape == (slots, 224, 224) and g["L"].dtype == np.uint8
    assert g["L"].chunks == (1, 224, 224) and g["L"].shards == (4, 224, 224)
    assert g["bins"].shape == (slots, 56, 56) and g["bins"].dtype == np.int16
    assert g["label"].dtype == np.int16 and set(g["label"].oindex[g["slots"][:]].tolist()) <= {0, 1, 2, 3}
    assert abs(g["prior"][:].sum() - 1) < 1e-12
    assert abs((g["prior"][:] * g["weights"][:]).sum() - 1) < 1e-5
    assert g.attrs["complete"] and g.attrs["S"] == 224 and g.attrs["lambda"] == 0.5
    assert not (store / "_staging").exists()


def test_rerun_is_a_no_op_and_other_settings_are_refused(mixed_source, clean_store):
    source, _ = mixed_source
    store, _ = clean_store
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert run_flow(source, store)["state"] == "done"
    assert before == {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    with pytest.raises(StoreError, match="other settings"):
        run_flow(source, store, size=64)


def test_killed_run_resumes_to_the_same_store(mixed_source, clean_store, tmp_path):
    source, _ = mixed_source
    store = tmp_path / "resumed.zarr"
    cmd = [sys.executable, "-m", "flows.preprocess", str(source), str(store), "--part-images", "5"]
    cmd += ["--shard-images", "4", "--workers", "2"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = store / "_staging"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(staging.glob("part-*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow and its Dask workers, mid-run
    proc.wait()
    staged = len(list(staging.glob("part-*.json")))
    assert staged >= 1 and not (store / MANIFEST).exists()
    with pytest.raises(StoreError, match="no zarr.json|incomplete"):
        open_store(store)
    run_flow(source, store)
    want, got = arrays(clean_store[0]), arrays(store)
    for name in want:
        assert np.array_equal(want[name], got[name]), name
    assert (store / MANIFEST).read_text() == (clean_store[0] / MANIFEST).read_text()


def test_auto_part_images_depends_on_the_source_count_only():
    from pipeline.build import auto_part_images

    assert [auto_part_images(n) for n in (1, 100, 512, 3200, 1_281_167)] == [64, 64, 128, 832, 2048]
