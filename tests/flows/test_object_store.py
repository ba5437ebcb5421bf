"""Sources and stores in object storage, against real S3 servers on 127.0.0.1 (moto's standalone server; rclone's
for credentials and read-only buckets): class folders and tar shards in a bucket become a store in a bucket, with 2
Dask workers, equal array for array to a local build of the same files; kills of the flow or of a worker resume
to the same store; bad buckets and credentials are refused in one line, leaving nothing."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.store.format import MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.dali]
OPTS = ["--part-images", "8", "--shard-images", "4", "--workers", "2", "--no-quality"]


def flow(source: str, store: str, *extra: str, env: dict | None = None, check: bool = True):
    cmd = [sys.executable, "-m", "flows.preprocess", source, store, *OPTS, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def plain_zarr(s3, bucket: str, prefix: str):
    """The store's group read with zarr-python's own ObjectStore over obstore, as any user would."""
    return zarr.open_group(zarr.storage.ObjectStore(s3.client(bucket, prefix), read_only=True), mode="r")


def read(s3, bucket: str, key: str) -> bytes:
    import obstore

    return obstore.get(s3.client(bucket), key).bytes().to_bytes()


def arrays(group) -> dict[str, np.ndarray]:
    out = {name: np.asarray(group[name][:]) for name in ("L", "bins", "label", "slots", "prior", "weights")}
    return out | {"path": np.array([str(p) for p in group["path"][:]])}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def sources(mixed_source, tmp_path_factory):
    """The mixed source as class folders and as WebDataset tar shards, on disk."""
    from benchmarks.packing import webdataset

    folders = tmp_path_factory.mktemp("objects") / "src"  # what an object store can hold: no links, no FIFOs
    for f in sorted(mixed_source[0].rglob("*")):
        if f.is_file() and not f.is_symlink() and os.access(f, os.R_OK):
            (folders / f.relative_to(mixed_source[0])).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, folders / f.relative_to(mixed_source[0]))
    tars = webdataset(folders, tmp_path_factory.mktemp("tars") / "src", per_shard=7)
    return {"classes": folders, "tar": tars}


@pytest.fixture(scope="module")
def local_builds(sources, tmp_path_factory):
    """Each source built locally, as the reference."""
    out = {}
    for layout, src in sources.items():
        store = tmp_path_factory.mktemp(f"local-{layout}") / "s.zarr"
        flow(str(src), str(store))
        out[layout] = store
    return out


@pytest.fixture(scope="module")
def uploaded(sources, s3_server):
    """Each source uploaded into a bucket of its own: {layout: URL}."""
    return {layout: s3_server.put_tree(src, f"in-{layout}", "src") for layout, src in sources.items()}


@pytest.mark.parametrize("layout", ["classes", "tar"])
def test_a_bucket_source_becomes_a_bucket_store_equal_to_a_local_build(layout, uploaded, local_builds, s3, tmp_path):
    s3.bucket(f"out-{layout}")
    flow(uploaded[layout], f"s3://out-{layout}/s.zarr", "--storage-option", "region=us-east-1")
    remote = plain_zarr(s3, f"out-{layout}", "s.zarr")
    local = zarr.open_group(str(local_builds[layout]), mode="r")
    assert_same(arrays(remote), arrays(local))
    assert remote.attrs["complete"] and remote.attrs["n_images"] == local.attrs["n_images"] > 0
    manifest = read(s3, f"out-{layout}", f"s.zarr/{MANIFEST}").decode()
    assert manifest == (local_builds[layout] / MANIFEST).read_text()
    keys = s3.keys(f"out-{layout}")
    assert not [k for k in keys if "/_staging/" in k]  # staging removed at the end
    written = b"".join(read(s3, f"out-{layout}", k) for k in keys if k.endswith((".json", ".jsonl")))
    assert s3.SECRET.encode() not in written and s3.KEY.encode() not in written  # credentials stay in the env
    prefect = b"".join(f.read_bytes() for f in Path(os.environ["PREFECT_HOME"]).rglob("*") if f.is_file())
    assert f"s3://out-{layout}/s.zarr".encode() in prefect  # the flow run's parameters are kept there ...
    assert s3.SECRET.encode() not in prefect  # ... and hold no secret
    from pipeline.check import main as quality

    assert quality([f"s3://out-{layout}/s.zarr", "--out", str(tmp_path), "--sample", "4"]) == 0


def staged_parts(s3, bucket: str) -> int:
    return sum("/_staging/part-" in k for k in s3.keys(bucket))


def test_a_killed_flow_resumes_to_the_same_store(uploaded, local_builds, s3):
    s3.bucket("killed")
    cmd = [sys.executable, "-m", "flows.preprocess", uploaded["classes"], "s3://killed/s.zarr", *OPTS]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and staged_parts(s3, "killed") < 1:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow and its Dask workers, mid-run
    proc.wait()
    assert staged_parts(s3, "killed") >= 1
    flow(uploaded["classes"], "s3://killed/s.zarr")
    assert_same(arrays(plain_zarr(s3, "killed", "s.zarr")), arrays(zarr.open_group(str(local_builds["classes"]))))


def test_a_killed_worker_is_replaced_and_the_store_is_the_same(uploaded, local_builds, s3):
    import psutil

    s3.bucket("worker")
    cmd = [sys.executable, "-m", "flows.preprocess", uploaded["classes"], "s3://worker/s.zarr", *OPTS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300

    def workers() -> list:  # the Dask worker processes, which the nannies in the flow's process spawn
        found = []
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                line = " ".join(p.cmdline())
                if "spawn_main" in line and "resource_tracker" not in line:
                    found.append(p)
            except psutil.Error:  # gone meanwhile
                pass
        return found

    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        running = workers()
        if running and any("/L/c/" in k for k in s3.keys("worker")):  # shards being written
            running[0].kill()
            killed = running[0].pid
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert killed is not None, "no worker process was found to kill"
    assert proc.returncode == 0, err[-3000:]
    assert_same(arrays(plain_zarr(s3, "worker", "s.zarr")), arrays(zarr.open_group(str(local_builds["classes"]))))


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials", "read-only bucket", "secret in a flag"])
def test_bad_buckets_are_refused_in_one_line(case, uploaded, sources, s3, tmp_path):
    from tests.conftest import RcloneS3

    env, store, extra, src, rclone = dict(os.environ), "s3://nothere/s.zarr", [], uploaded["classes"], None
    if case in ("wrong credentials", "read-only bucket"):  # a server that checks keys and can refuse writes
        shutil.copytree(sources["classes"], tmp_path / "disk" / "in" / "src")
        rclone = RcloneS3(tmp_path / "disk", read_only=case == "read-only bucket")
        env |= rclone.env | ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"} if case == "wrong credentials" else {})
        store, src = "s3://in/s.zarr", "s3://in/src"
    elif case == "secret in a flag":
        store, extra = "s3://in-classes/s.zarr", ["--storage-option", "secret_access_key=abc"]
    disk = sorted(str(p) for p in (tmp_path / "disk").rglob("*"))
    keys = {b: s3.keys(b) for b in ("in-classes",)}
    try:
        r = flow(src, store, *extra, env=env, check=False)
    finally:
        if rclone:
            rclone.stop()
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "abc" not in r.stderr, r.stderr
    assert sorted(str(p) for p in (tmp_path / "disk").rglob("*")) == disk  # nothing left behind
    assert {b: s3.keys(b) for b in keys} == keys


def test_a_server_that_answers_ranges_with_200_still_gives_the_same_store(sources, local_builds, tmp_path):
    """rclone's S3 server answers a ranged GET with 200 and a Content-Range, which obstore refuses: tar members,
    shard indexes and zarr's partial reads go through signed ranged GETs instead, and the store is the same."""
    from tests.conftest import RcloneS3

    shutil.copytree(sources["tar"], tmp_path / "disk" / "in" / "src")
    (tmp_path / "disk" / "out").mkdir()
    rclone = RcloneS3(tmp_path / "disk")
    env = dict(os.environ) | rclone.env
    try:
        flow("s3://in/src", "s3://out/s.zarr", env=env)
        check = [sys.executable, "-m", "pipeline.check", "s3://out/s.zarr", "--out", str(tmp_path / "q"), "--sample",
                 "4"]  # fmt: skip
        r = subprocess.run(check, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        rclone.stop()
    remote = zarr.open_group(str(tmp_path / "disk" / "out" / "s.zarr"), mode="r")  # the same files, read from disk
    assert_same(arrays(remote), arrays(zarr.open_group(str(local_builds["tar"]), mode="r")))
