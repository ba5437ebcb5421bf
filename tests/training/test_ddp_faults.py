"""A rank lost from a two-rank run (gloo, on the CPU), started as torchrun starts its workers: frozen (SIGSTOP) or
killed, the other ends within --ddp-timeout with one line naming the lost rank and the remedy, and exit code 4."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, make_store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ddp"), n=48, size=64)[0]


def ranks(store, tmp_path: Path) -> list[subprocess.Popen]:
    port, procs = free_port(), []
    for rank in (0, 1):
        env = os.environ | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        cmd = [sys.executable, "-m", "training.run", "--store", str(store), "--out", str(tmp_path / "run"),
               "--width", "0.125", "--size", "32", "--batch-size", "8", "--holdout", "0", "--steps", "100000",
               "--loader-threads", "1", "--no-tensorboard", "--ddp-timeout", "10", "--ckpt-every", "2",
               "--sample-log", str(tmp_path / "samples")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    log = tmp_path / "samples" / "rank-1.jsonl"
    deadline = time.monotonic() + 180
    while not (log.is_file() and log.read_text().count("\n") >= 4) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.is_file(), procs[1].stderr.read() if procs[1].poll() is not None else "rank 1 never trained"
    return procs


@pytest.mark.parametrize("fault", ["frozen", "killed"])
def test_a_lost_rank_ends_the_other_with_one_line(fault, store, tmp_path):
    rank0, rank1 = ranks(store, tmp_path)
    t0 = time.monotonic()
    rank1.send_signal(signal.SIGSTOP if fault == "frozen" else signal.SIGKILL)
    try:
        _, err = rank0.communicate(timeout=120)
    finally:
        rank1.kill()
        rank0.kill()
    seconds = time.monotonic() - t0
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]  # not tqdm
    assert rank0.returncode == 4, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert "rank 1 stopped answering" in lines[0] and "--resume" in lines[0], lines
    assert seconds < (10 + 20 if fault == "frozen" else 20), seconds
