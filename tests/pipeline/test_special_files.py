"""Files that are not regular files, where photos are expected: a FIFO named like a photo is a recorded skip in a
source and a one-line refusal in `colorize`, never a read that waits for a writer forever."""

import json
import os
import subprocess
import sys

import pytest

from pipeline.storage.files import read_file
from tests.conftest import make_store


def test_read_file_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.JPEG")
    (tmp_path / "ok.txt").write_bytes(b"abc")
    assert read_file(tmp_path / "ok.txt") == b"abc"
    for path, kind in ((tmp_path / "fifo.JPEG", "a FIFO"), (tmp_path, "a folder"), ("/dev/null", "a device")):
        with pytest.raises(OSError, match=f"not a regular file \\({kind}"):
            read_file(path)


def test_a_fifo_among_the_photos_is_a_recorded_skip(tmp_path):
    store, src = make_store(tmp_path, n=6)
    os.mkfifo(src / "train" / "c0" / "waits.JPEG")
    code = (f"from pipeline.build import build_store; from pipeline.config import PreprocessConfig; "
            f"build_store(PreprocessConfig(source={str(src)!r}, size=64, grayscale='include', shard_images=4), "
            f"{str(tmp_path / 'f.zarr')!r})")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # a read that waits would time out
    records = [json.loads(line) for line in (tmp_path / "f.zarr" / "sources.jsonl").read_text().splitlines()]
    fifo = [r for r in records if r["path"].endswith("waits.JPEG")]
    assert len(fifo) == 1 and fifo[0]["kind"] == "unreadable" and "FIFO" in fifo[0]["reason"]
    assert sum(r["outcome"] == "stored" for r in records) == 6  # the photos beside it are all kept


def test_colorize_refuses_a_fifo_at_once(tmp_path, tiny_store):
    from training.colorize import main as colorize
    from training.run import TrainConfig, train

    store, _ = tiny_store
    train(TrainConfig(store=str(store), out=str(tmp_path / "run"), width=1 / 8, size=64, batch_size=4, steps=1,
                      holdout=0.25, eval_images=2, tensorboard=False))  # fmt: skip
    os.mkfifo(tmp_path / "fifo.JPEG")
    ckpt = str(tmp_path / "run" / "checkpoint-last.pt")
    assert colorize(["--checkpoint", ckpt, str(tmp_path / "fifo.JPEG"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
