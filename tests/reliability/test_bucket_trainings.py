"""Training runs on buckets shared by careless and hostile users, on a real S3 server on 127.0.0.1 (moto's;
rclone's where a server that checks credentials matters): two runs on one --out, an --out inside the store,
hostile metadata, an endpoint that does not answer or takes a password or refuses the credentials. Every
refusal is one line, and nothing of anybody else's is touched."""

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

from tests.conftest import RcloneS3
from tests.reliability.refusals import ROOT, cli, one_line

pytestmark = pytest.mark.slow
TRAIN = ["--width", "0.125", "--size", "32", "--batch-size", "4", "--holdout", "0.25", "--eval-images", "2",
         "--no-tensorboard", "--loader-threads", "1"]  # fmt: skip


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
