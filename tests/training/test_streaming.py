"""The reader on a store in a real S3 server (moto's, on 127.0.0.1): the same images as from local disk, with and
without a local cache, and each fault a bucket can throw at it: an outage, a server gone for good, a corrupted
object, a full cache disk."""

import contextlib
import re
import subprocess
import time

import numpy as np
import obstore
import pytest

from benchmarks.netproxy import LatencyProxy
from pipeline.common.settings import parse_bytes
from pipeline.storage import location
from pipeline.store.cache import ShardCache
from pipeline.store.format import StoreError, shard_key
from pipeline.store.reader import ShardReader
from tests.conftest import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("stream"), n=24, size=64)[0]


@pytest.fixture
def remote(store, s3):
    """A fresh copy of the store in its own bucket: (URL, bucket name)."""
    name = f"stream-{time.monotonic_ns()}"
    return s3.put_tree(store, name, "s.zarr"), name


def all_images(reader: ShardReader, whole: bool = False) -> dict:
    idx = np.random.default_rng(0).permutation(reader.n)
    fetched = reader.fetch_shards(idx) if whole else reader.fetch(idx)
    out = reader.empty(len(idx))
    reader.decode(fetched, np.arange(len(idx)), out)
    return {k: v[np.argsort(idx)] for k, v in out.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("whole", [False, True])
def test_a_bucket_store_reads_as_the_local_one_with_or_without_a_cache(store, remote, whole, tmp_path):
    local = all_images(ShardReader(store), whole)
    assert same(all_images(ShardReader(remote[0]), whole), local)
    assert not (tmp_path / "cache").exists()  # without a cache nothing is written
    cache = ShardCache(tmp_path / "cache", parse_bytes("1GB"), remote[0])
    assert same(all_images(ShardReader(remote[0], shard_cache=cache), whole), local)
    cached = sorted(p.relative_to(cache.root).as_posix() for p in cache.root.rglob("*") if p.is_file())
    assert cached and all(k.split("/")[0] in ("L", "bins", "label") for k in cached)
    for path in cache.root.rglob("*"):  # a damaged cached file is found by its checks and fetched again
        if path.is_file() and path.relative_to(cache.root).parts[0] == "L":
            data = bytearray(path.read_bytes())
            data[len(data) // 3] ^= 0xFF
            path.write_bytes(bytes(data))
    assert same(all_images(ShardReader(remote[0], shard_cache=ShardCache(tmp_path / "cache", 1 << 30, remote[0]))),
                local)  # fmt: skip


def test_the_cache_stays_under_its_limit_and_evicts_the_least_recently_used(store, remote, tmp_path):
    shard = max(p.stat().st_size for p in (store / "L").rglob("*") if p.is_file())
    cache = ShardCache(tmp_path / "c", int(2.5 * shard), remote[0])
    reader = ShardReader(remote[0], shard_cache=cache)
    for _ in range(2):
        assert same(all_images(reader, whole=True), all_images(ShardReader(store), whole=True))
        total = sum(p.stat().st_size for p in cache.root.rglob("*") if p.is_file())
        assert 0 < total <= cache.limit


def test_a_corrupted_object_names_its_shard_and_image(store, remote, s3):
    url, bucket = remote
    client = s3.client(bucket)
    key = f"s.zarr/{shard_key('L', 0)}"
    data = bytearray(bytes(obstore.get(client, key).bytes()))
    data[100] ^= 0xFF  # inside the first chunk: its crc32c no longer holds
    obstore.put(client, key, bytes(data))
    reader = ShardReader(url)
    with pytest.raises(StoreError, match=r"fails its crc32c") as e:
        all_images(reader)
    shard = key.removeprefix("s.zarr/")
    assert shard in str(e.value) and "image" in str(e.value)


@pytest.fixture
def proxied(s3_server, monkeypatch):
    """The S3 server behind a proxy that can go away: the proxy's endpoint in the environment."""
    proxy = LatencyProxy(("127.0.0.1", s3_server.port))
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    with contextlib.suppress(Exception):
        proxy.stop()


def test_an_outage_of_a_few_seconds_is_retried_and_reading_goes_on(store, remote, proxied):
    reader = ShardReader(location(remote[0], {"retry_timeout": "30"}))  # the options travel with the location
    proxied.outage(3.0)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert same(all_images(reader), all_images(ShardReader(store)))
    assert time.monotonic() - t0 > 2.0  # it waited for the server, with backoff


def test_a_server_gone_for_good_raises_a_store_error_naming_shard_and_image(remote, proxied):
    reader = ShardReader(location(remote[0], {"retry_timeout": "3", "max_retries": "3"}))
    proxied.stop()
    with pytest.raises(StoreError, match=r"shard \S+ cannot be read \(image \d+\)"):
        all_images(reader)


def test_training_from_a_bucket_that_goes_away_stops_with_its_last_checkpoint_whole(remote, proxied, tmp_path,
                                                                                      capsys):  # fmt: skip
    import threading

    from training import checkpoint
    from training.run import main as train

    argv = ["--store", remote[0], "--out", str(tmp_path / "run"), "--width", "0.125", "--size", "64", "--steps",
            "100000", "--batch-size", "4", "--ckpt-every", "2", "--preload", "0", "--loader-threads", "1",
            "--storage-option", "retry_timeout=2", "--storage-option", "max_retries=1"]  # fmt: skip
    stop = threading.Timer(8.0, proxied.stop)  # mid-run: start-up takes a few seconds, then steps go fast
    stop.start()
    try:
        assert train(argv) == 2
    finally:
        stop.cancel()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and re.search(r"shard \S+ cannot be read \(image \d+\)", err)
    state = checkpoint.load(tmp_path / "run" / "checkpoint-last.pt")  # whole, and at a step of the run
    assert state["step"] >= 2 and state["step"] % 2 == 0


def test_a_full_cache_disk_evicts_or_reads_past_the_cache(store, remote, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    try:
        # the limit says 1 GB, the disk holds 64 kB: writes fail with ENOSPC, and the reader carries on
        cache = ShardCache(disk, parse_bytes("1GB"), remote[0])
        for whole in (False, True):
            assert same(all_images(ShardReader(remote[0], shard_cache=cache), whole), all_images(ShardReader(store)))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
