"""A bucket shared by careless and hostile users, on a real S3 server on 127.0.0.1 (moto's; rclone's where a server
that ignores conditional puts, or checks credentials, matters): URLs that would name another store, foreign
objects below a store, two writers, a cache of an earlier build, two runs on one --out, hostile metadata, an
endpoint that does not answer. Every refusal is one line, and nothing of anybody else's is touched."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import obstore
import pytest

from pipeline.build import build_store
from pipeline.storage import lease
from pipeline.store.cache import ShardCache
from pipeline.store.reader import ShardReader
from tests.conftest import RcloneS3, make_store
from tests.stores import small_cfg

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = ["--width", "0.125", "--size", "32", "--batch-size", "4", "--holdout", "0.25", "--eval-images", "2",
         "--no-tensorboard", "--loader-threads", "1"]  # fmt: skip


def objects(s3, bucket: str) -> dict[str, bytes]:
    client = s3.client(bucket)
    return {k: bytes(obstore.get(client, k).bytes()) for k in s3.keys(bucket)}


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]  # no tqdm
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cli(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code


@pytest.fixture(scope="module")
def photos(tiny_store):
    return tiny_store[1]


@pytest.fixture
def victim(s3, photos):
    """A good store at s3://shared/victim.zarr, alone in its bucket, and the bucket's objects as they were."""
    s3.bucket("shared")
    for key in s3.keys("shared"):  # what an earlier test planted
        obstore.delete(s3.client("shared"), key)
    build_store(small_cfg(photos), "s3://shared/victim.zarr")
    return objects(s3, "shared")


@pytest.mark.parametrize(
    "url",
    [
        "s3://shared/vic%74im.zarr",
        "s3://shared/a%2Fb.zarr",
        "s3://shared/victim.zarr#x",
        "s3://shared/victim.zarr?x=1",
        "s3://shared/run#1/x.zarr",
        "s3://shared/a/../victim.zarr",
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_url_that_would_name_another_store_is_refused(url, overwrite, victim, s3, photos, capsys):
    from flows.preprocess import main

    assert cli(main, [str(photos), url, "--size", "64"] + (["--overwrite"] if overwrite else [])) == 2
    assert "not taken in a URL" in one_line(capsys)
    assert objects(s3, "shared") == victim


@pytest.mark.parametrize("planted", ["victim.zarr/label/c/sub/KEEPME.txt", "victim.zarr/bins/c/0/KEEPME",
                                     "victim.zarr/_staging/KEEPME.txt", "victim.zarr/L/c/7/0/0"])  # fmt: skip
def test_overwrite_in_a_bucket_deletes_nothing_foreign(planted, victim, s3, photos, capsys):
    from flows.preprocess import main

    obstore.put(s3.client("shared"), planted, b"mine")
    before = objects(s3, "shared")
    assert cli(main, [str(photos), "s3://shared/victim.zarr", "--size", "64", "--overwrite"]) == 2
    assert planted.removeprefix("victim.zarr/") in one_line(capsys)
    with pytest.raises(Exception, match="not the store's own"):
        build_store(small_cfg(photos, size=64), "s3://shared/victim.zarr", overwrite=True)  # the API refuses alike
    assert objects(s3, "shared") == before


def test_a_folder_marker_among_a_stores_keys_is_foreign(victim, s3, photos, capsys):
    """`label/c/0/` (an S3 folder marker) lists as `label/c/0`, a chunk's key: listed twice, it is refused."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{s3.endpoint}/shared/victim.zarr/label/c/0/", data=b"",
                                                  method="PUT"), timeout=30)  # fmt: skip
    before = objects(s3, "shared")
    from flows.preprocess import main

    assert cli(main, [str(photos), "s3://shared/victim.zarr", "--size", "64", "--overwrite"]) == 2
    assert "label/c/0 (listed twice" in one_line(capsys)
    assert objects(s3, "shared") == before


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


def train_main(argv) -> int:
    from training.run import main

    return cli(main, argv)


@pytest.mark.parametrize("out", ["s3://one-run/x", "local"])
def test_one_run_per_folder(out, tiny_store, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s3.bucket("one-run")
    out = str(tmp_path / "run") if out == "local" else out
    run = ["--store", str(tiny_store[0]), "--out", out, *TRAIN]
    assert train_main([*run, "--steps", "2"]) == 0
    capsys.readouterr()
    assert train_main([*run, "--steps", "2"]) == 2
    line = one_line(capsys)
    assert "holds a run" in line and "--resume" in line
    assert train_main([*run, "--steps", "2", "--resume"]) == 0  # continued (here: evaluated again), as it says
    capsys.readouterr()
    from pipeline.storage import location

    here = socket.gethostname()
    lease_path = location(out) / "lease.json"
    lease_path.write_bytes(json.dumps({"owner": "x", "host": here, "pid": os.getpid(), "since": time.time(),
                                       "beat": time.time()}).encode())  # fmt: skip
    assert train_main([*run, "--steps", "2", "--resume"]) == 2
    assert "being written by another run" in one_line(capsys)


def test_an_out_inside_the_store_is_refused_however_it_is_reached(tiny_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tiny_store[0])
    before = sorted(p.name for p in tiny_store[0].iterdir())
    for out in (str(tiny_store[0] / "run"), "link/run", str(tmp_path / "link" / "L" / "x")):
        assert train_main(["--store", str(tiny_store[0]), "--out", out, *TRAIN, "--steps", "1"]) == 2
        assert "lies in the store" in one_line(capsys)
    assert sorted(p.name for p in tiny_store[0].iterdir()) == before


def test_two_trainings_on_one_bucket_out_the_second_is_refused(tiny_store, s3, tmp_path):
    s3.bucket("both")
    env = os.environ | s3.env
    run = [sys.executable, "-m", "training.run", "--store", str(tiny_store[0]), "--out", "s3://both/x", *TRAIN]
    first = subprocess.Popen([*run, "--steps", "60"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while "x/lease.json" not in s3.keys("both") and time.monotonic() < deadline:
        time.sleep(0.2)
    second = subprocess.run([*run, "--steps", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "being written by another run" in second.stderr
    assert first.wait(300) == 0, first.stderr.read()[-3000:]
    from training import checkpoint

    assert checkpoint.load("s3://both/x/checkpoint-last.pt")["step"] == 60
    assert "x/lease.json" not in s3.keys("both")


def bucket_store(s3, tiny_store, name: str) -> str:
    s3.bucket(name)
    return s3.put_tree(tiny_store[0], name, "s.zarr")


def edit_json(s3, bucket: str, key: str, change) -> None:
    client = s3.client(bucket)
    meta = json.loads(bytes(obstore.get(client, key).bytes()))
    change(meta)
    obstore.put(client, key, json.dumps(meta).encode())


def hostile(kind: str, s3, bucket: str) -> None:
    """Damage the bucket's store as `kind` says."""
    client = s3.client(bucket)
    if kind == "L shape 1e9":
        edit_json(s3, bucket, "s.zarr/L/zarr.json", lambda m: m["shape"].__setitem__(0, 10**9))
    elif kind == "n_images 1e12":
        edit_json(s3, bucket, "s.zarr/zarr.json", lambda m: m["attributes"].__setitem__("n_images", 10**12))
    elif kind == "shard of 1e9 images":
        edit_json(s3, bucket, "s.zarr/L/zarr.json",
                  lambda m: m["chunk_grid"]["configuration"].__setitem__("chunk_shape", [10**9, 32, 32]))  # fmt: skip
    elif kind == "2 MB label shard":
        obstore.put(client, "s.zarr/label/c/0", os.urandom(2 << 20))
    elif kind == "index offset 2^63":
        import google_crc32c

        key = "s.zarr/L/c/0/0/0"
        data = bytearray(bytes(obstore.get(client, key).bytes()))
        index = data[-(16 * 4 + 4) : -4]
        table = np.frombuffer(bytes(index), "<u8").reshape(4, 2).copy()
        table[1, 0] = 2**63
        table[1, 1] = 2**63 + 1000  # offset + length wraps around to 1000 in 64 bits
        raw = table.tobytes()
        data[-(16 * 4 + 4) :] = raw + int(google_crc32c.value(raw)).to_bytes(4, "little")
        obstore.put(client, key, bytes(data))


KINDS = ["L shape 1e9", "n_images 1e12", "shard of 1e9 images", "2 MB label shard", "index offset 2^63"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_metadata_in_a_bucket_is_refused_in_one_line_with_bounded_memory(kind, tiny_store, s3, tmp_path,
                                                                                  monkeypatch, capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    name = "hostile-" + kind.split()[0].lower().replace("_", "")
    url = bucket_store(s3, tiny_store, name)
    hostile(kind, s3, name)
    argv = ["--store", url, "--out", str(tmp_path / "run"), *TRAIN, "--steps", "2", "--preload", "0",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    tracemalloc.start()
    try:
        rc = train_main(argv)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    line = one_line(capsys)
    assert rc == 2 and url in line, line
    if kind == "index offset 2^63":
        assert "L/c/0/0/0" in line
    assert peak < 256 << 20, peak


def silent_server():
    """A TCP server that accepts connections and never answers (a hung endpoint)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def test_an_endpoint_that_does_not_answer_is_refused_within_seconds(monkeypatch, tmp_path, capsys):
    s = silent_server()
    held = []
    threading.Thread(target=lambda: [held.append(s.accept()) for _ in range(64)], daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
    for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    t0 = time.monotonic()
    assert train_main(["--store", "s3://silent/s.zarr", "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert time.monotonic() - t0 < 45
    assert "does not answer" in one_line(capsys)
    s.close()


def test_a_password_in_the_endpoint_is_never_echoed(s3, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint.replace("http://", "http://admin:S3CRET@"))
    assert train_main(["--store", "s3://any/s.zarr", "--out", str(tmp_path / "r"), *TRAIN]) == 2
    line = one_line(capsys)
    assert "S3CRET" not in line and "AWS_ENDPOINT_URL holds an '@'" in line


def test_a_wrong_secret_is_reported_as_refused_credentials(tiny_store, tmp_path, monkeypatch, capsys):
    import shutil

    (tmp_path / "bkt").mkdir()
    shutil.copytree(tiny_store[0], tmp_path / "bkt" / "s.zarr")
    server = RcloneS3(tmp_path)
    try:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        assert train_main(["--store", "s3://bkt/s.zarr", "--out", str(tmp_path / "r"), *TRAIN]) == 2
        assert "credentials were refused" in one_line(capsys)
    finally:
        server.stop()
