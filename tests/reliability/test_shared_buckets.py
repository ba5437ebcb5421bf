"""A bucket shared by careless and hostile users, on a real S3 server on 127.0.0.1 (moto's; rclone's where a server
that ignores conditional puts matters): URLs that would name another store, foreign objects below a store, two
writers, a cache of an earlier build. Every refusal is one line, and nothing of anybody else's is touched
(training runs on such buckets: test_bucket_trainings.py)."""

import subprocess
import sys
import threading

import numpy as np
import obstore
import pytest

from pipeline.build import build_store
from pipeline.storage import lease
from pipeline.store.cache import ShardCache
from pipeline.store.reader import ShardReader
from tests.conftest import RcloneS3, make_store
from tests.reliability.refusals import ROOT, cli, one_line
from tests.stores import small_cfg

pytestmark = pytest.mark.slow


def objects(s3, bucket: str) -> dict[str, bytes]:
    client = s3.client(bucket)
    return {k: bytes(obstore.get(client, k).bytes()) for k in s3.keys(bucket)}


@pytest.fixture(scope="module")
def photos(tiny_store):
    return tiny_store[1]


@pytest.fixture
def victim(s3, photos):
    """A good store at s3://common/victim.zarr, alone in its bucket, and the bucket's objects as they were."""
    s3.bucket("common")
    for key in s3.keys("common"):  # what an earlier test planted
        obstore.delete(s3.client("common"), key)
    build_store(small_cfg(photos), "s3://common/victim.zarr")
    return objects(s3, "common")


@pytest.mark.parametrize(
    "url",
    [
        "s3://common/vic%74im.zarr",
        "s3://common/a%2Fb.zarr",
        "s3://common/victim.zarr#x",
        "s3://common/victim.zarr?x=1",
        "s3://common/run#1/x.zarr",
        "s3://common/a/../victim.zarr",
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_url_that_would_name_another_store_is_refused(url, overwrite, victim, s3, photos, capsys):
    from flows.preprocess import main

    assert cli(main, [str(photos), url, "--size", "64"] + (["--overwrite"] if overwrite else [])) == 2
    assert "not taken in a URL" in one_line(capsys)
    assert objects(s3, "common") == victim


@pytest.mark.parametrize("planted", ["victim.zarr/label/c/sub/KEEPME.txt", "victim.zarr/bins/c/0/KEEPME",
                                     "victim.zarr/_staging/KEEPME.txt", "victim.zarr/L/c/7/0/0"])  # fmt: skip
def test_overwrite_in_a_bucket_deletes_nothing_foreign(planted, victim, s3, photos, capsys):
    from flows.preprocess import main

    obstore.put(s3.client("common"), planted, b"mine")
    before = objects(s3, "common")
    assert cli(main, [str(photos), "s3://common/victim.zarr", "--size", "64", "--overwrite"]) == 2
    assert planted.removeprefix("victim.zarr/") in one_line(capsys)
    with pytest.raises(Exception, match="not the store's own"):
        build_store(small_cfg(photos, size=64), "s3://common/victim.zarr", overwrite=True)  # the API refuses alike
    assert objects(s3, "common") == before


def test_a_folder_marker_among_a_stores_keys_is_foreign(victim, s3, photos, capsys):
    """`label/c/0/` (an S3 folder marker) lists as `label/c/0`, a chunk's key: listed twice, it is refused."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{s3.endpoint}/common/victim.zarr/label/c/0/", data=b"",
                                                  method="PUT"), timeout=30)  # fmt: skip
    before = objects(s3, "common")
    from flows.preprocess import main

    assert cli(main, [str(photos), "s3://common/victim.zarr", "--size", "64", "--overwrite"]) == 2
    assert "label/c/0 (listed twice" in one_line(capsys)
    assert objects(s3, "common") == before


BUILD = "import sys; from pipeline.build import build_store; from tests.stores import small_cfg; " \
        "build_store(small_cfg(sys.argv[1], size=int(sys.argv[2])), sys.argv[3])"  # fmt: skip


def test_two_writers_into_one_bucket_store_one_is_refused(s3, photos):
    s3.bucket("two")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(photos), size, "s3://two/s.zarr"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for size in ("64", "32")
    ]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    assert sorted(rc == 0 for rc, _ in results) == [False, True], results
    refused = next(err for rc, err in results if rc)
    # the lease is held (or was taken in the same instant: either way "one writer at a time"), or the store exists
    assert "one writer at a time" in refused or "built with other settings" in refused, refused
    size = 64 if results[0][0] == 0 else 32
    reader = ShardReader("s3://two/s.zarr")
    assert reader.group.attrs["S"] == size and reader.read(np.arange(reader.n))["L"].shape[1] == size


def test_a_lease_race_on_a_server_that_ignores_conditions_has_one_winner(tmp_path, monkeypatch):
    (tmp_path / "bkt").mkdir()
    server = RcloneS3(tmp_path)  # rclone's serve s3 accepts If-None-Match puts without checking them
    try:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        won, refused = [], []

        def take(k):
            try:
                won.append(lease.Lease("s3://bkt/s.zarr/_staging/lease.json", f"writer {k}", "store").acquire())
            except lease.LeaseHeld as e:
                refused.append(str(e))

        threads = [threading.Thread(target=take, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == 3, (won, refused)
        won[0].release()
    finally:
        server.stop()


def test_a_cache_of_an_earlier_build_or_a_replaced_object_is_never_read(s3, tmp_path):
    s3.bucket("cache")
    url = "s3://cache/s.zarr"
    first, _ = make_store(tmp_path / "a", n=12, size=32, seed=0)
    second, _ = make_store(tmp_path / "b", n=12, size=32, seed=1)
    s3.put_tree(first, "cache", "s.zarr")
    disk = tmp_path / "cache-dir"
    idx = np.arange(12)

    def cached():  # a new reader each time, as a new training run: the same cache folder
        return ShardReader(url, shard_cache=ShardCache(disk, 1 << 30, url)).read(idx)["L"]

    assert np.array_equal(cached(), ShardReader(first).read(idx)["L"])
    for k in s3.keys("cache"):  # the store rebuilt at the same URL: another build id
        obstore.delete(s3.client("cache"), k)
    s3.put_tree(second, "cache", "s.zarr")
    assert np.array_equal(cached(), ShardReader(second).read(idx)["L"])
    client = s3.client("cache")  # one shard object replaced in place, the build id unchanged
    a, b = "s.zarr/L/c/0/0/0", "s.zarr/L/c/1/0/0"
    swap = bytes(obstore.get(client, a).bytes()), bytes(obstore.get(client, b).bytes())
    obstore.put(client, a, swap[1])
    obstore.put(client, b, swap[0])
    assert np.array_equal(cached(), ShardReader(url).read(idx)["L"])  # as the bucket holds it now


def test_the_quality_check_reads_zhangs_prior_from_a_bucket(tiny_store, s3, tmp_path):
    import io
    import json

    from pipeline.check import main as quality

    prior = np.random.default_rng(0).random(313)
    buf = io.BytesIO()
    np.save(buf, prior)
    s3.bucket("priors")
    obstore.put(s3.client("priors"), "prior_probs.npy", buf.getvalue())
    argv = [str(tiny_store[0]), "--out", str(tmp_path / "q"), "--zhang-prior", "s3://priors/prior_probs.npy"]
    assert quality(argv) in (0, 1)  # judged, whatever the tiny store's checks say
    report = json.loads(next((tmp_path / "q").glob("*.quality.json")).read_text())
    assert report["kl_prior_vs_zhang"] is not None and np.isfinite(report["kl_prior_vs_zhang"])
