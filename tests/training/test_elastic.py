"""Training streamed from a bucket (moto's S3 server on 127.0.0.1) by several torchrun processes (gloo): two
simulated nodes with a cache each, and a run checkpointed mid-epoch on 2 ranks then resumed on 1 and on 4.
Each rank logs the images it trained on (--sample-log), and the logs are checked against the epochs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, make_store
from training import checkpoint

N, BATCH = 48, 8  # 6 batches an epoch; 2 images a rank on 4 ranks (BatchNorm needs 2)
RUN = ["--width", "0.125", "--size", "32", "--batch-size", str(BATCH), "--holdout", "0", "--steps", "12",
       "--eval-images", "4", "--log-every", "1", "--ckpt-every", "100", "--loader-threads", "1",
       "--no-tensorboard"]  # fmt: skip


@pytest.fixture(scope="module")
def bucket_store(tmp_path_factory, s3_server):
    store, _ = make_store(tmp_path_factory.mktemp("elastic"), n=N, size=64)
    return s3_server.put_tree(store, "elastic", "s.zarr")


def torchrun(args: list[str], nproc: int, extra: list[str], cwd: Path, timeout: int = 600) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "--nproc-per-node", str(nproc)]
    r = subprocess.run(cmd + ["-m", "training.run", *RUN, *extra], capture_output=True, text=True, timeout=timeout,
                       cwd=cwd)  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r


def logged(folder: Path) -> dict[int, list[int]]:
    """{step: the images of that step over all ranks, rank by rank}, from every rank's sample log."""
    rows = [json.loads(line) for f in sorted(folder.glob("rank-*.jsonl")) for line in f.read_text().splitlines()]
    steps: dict[int, list] = {}
    for row in sorted(rows, key=lambda r: (r["step"], r["rank"])):
        steps.setdefault(row["step"], []).extend(row["images"])
    return steps


def expected(store_url: str) -> dict[int, list[int]]:
    """{step: its images} as one process on one rank plans them (the order does not depend on the ranks)."""
    from training.data import Loader, StoreData
    from training.run import TrainConfig

    cfg = TrainConfig(store=store_url, batch_size=BATCH, holdout=0)
    loader = Loader(StoreData(store_url, holdout=0), cfg)
    per = loader.batches_per_epoch()
    return {s: loader.plan(*divmod(s, per))[0].tolist() for s in range(12)}


def test_two_nodes_share_each_epoch_exactly_and_checkpoint_and_evaluate(bucket_store, s3, tmp_path):
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
               "--nproc-per-node", "1", "-m", "training.run", *RUN, "--store", bucket_store, "--eval-store",
               bucket_store, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / f"node{node}-cache"),
               "--sample-log", str(tmp_path / "samples")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, (out[-2000:], err[-4000:])
    steps = logged(tmp_path / "samples")
    assert sorted(steps) == list(range(12))
    for epoch in (0, 1):  # every image of the store once an epoch, over both nodes
        seen = [i for s in range(6 * epoch, 6 * epoch + 6) for i in steps[s]]
        assert sorted(seen) == list(range(N))
    assert steps == expected(bucket_store)
    for node in (0, 1):  # each node filled its own cache from the bucket
        assert any(p.is_file() for p in (tmp_path / f"node{node}-cache").rglob("*"))
    assert checkpoint.load(tmp_path / "run" / "checkpoint-last.pt")["step"] == 12
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["images"] == 4
    from training.evaluate import main as evaluate

    ckpt = str(tmp_path / "run" / "checkpoint-last.pt")
    assert evaluate(["--checkpoint", ckpt, "--store", bucket_store, "--split", "all", "--max-images", "6",
                     "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["images"] == 6


@pytest.mark.parametrize("world", [1, 4])
def test_a_run_stopped_mid_epoch_on_2_ranks_resumes_exactly_on_another_number(world, bucket_store, s3, tmp_path):
    first = tmp_path / "first"
    torchrun(["--standalone"], 2, ["--store", bucket_store, "--out", str(first), "--stop-at", "3",
                                   "--sample-log", str(tmp_path / "before")], tmp_path)  # fmt: skip
    assert checkpoint.load(first / "checkpoint-last.pt")["step"] == 3
    resumed = tmp_path / "resumed"
    shutil.copytree(first, resumed)
    r = torchrun(["--standalone"], world, ["--store", bucket_store, "--out", str(resumed), "--resume",
                                           "--sample-log", str(tmp_path / "after")], tmp_path)  # fmt: skip
    assert f"saved on 2 ranks, now {world}" in r.stdout
    before, after = logged(tmp_path / "before"), logged(tmp_path / "after")
    assert sorted(before) == [0, 1, 2] and sorted(after) == list(range(3, 12))
    epoch0 = [i for s in range(6) for i in (before | after)[s]]
    assert sorted(epoch0) == list(range(N))  # the rest of the epoch: nothing seen twice, nothing missed
    assert before | after == expected(bucket_store)  # and the same epochs after it
    assert checkpoint.load(resumed / "checkpoint-last.pt")["step"] == 12
