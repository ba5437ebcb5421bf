"""Run folders in a bucket of a real S3 server (moto's, on 127.0.0.1): a run writes there, resumes from there on a
machine that kept nothing, and evaluate, colorize and --config read from there; a server that dies while a
checkpoint is written and a damaged checkpoint object are handled in one line each."""

import io
import json

import numpy as np
import obstore
import pytest
import torch
from PIL import Image

from benchmarks.netproxy import LatencyProxy
from training import checkpoint
from training.colorize import main as colorize
from training.evaluate import main as evaluate
from training.run import main as train

TINY = ["--width", "0.125", "--size", "64", "--batch-size", "4", "--holdout", "0.25", "--eval-images", "4",
        "--ckpt-every", "2"]  # fmt: skip


def objects(s3, bucket: str, prefix: str) -> set[str]:
    return {k.removeprefix(prefix + "/") for k in s3.keys(bucket, prefix)}


def read(s3, bucket: str, key: str) -> bytes:
    return bytes(obstore.get(s3.client(bucket), key).bytes())


def test_a_run_in_a_bucket_resumes_there_and_is_read_from_there(tiny_store, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named "s3:"
    s3.bucket("runs")
    out = "s3://runs/x"
    store = str(tiny_store[0])
    run = ["--store", store, "--out", out, "--steps", "6", *TINY]
    assert train([*run, "--stop-at", "3", "--log-every", "1", "--keep", "1"]) == 0
    found = objects(s3, "runs", "x")
    assert {"checkpoint-last.pt", "config.json", "metrics.csv", "evaluation.json", "evaluation.md", "loss.png",
            "checkpoint-00000003.pt"} <= found  # fmt: skip
    assert "checkpoint-00000002.pt" not in found and any(k.startswith("tensorboard/") for k in found)
    assert not (tmp_path / "s3:").exists()
    state = checkpoint.load(f"{out}/checkpoint-last.pt")
    assert state["step"] == 3 and state["config"]["out"] == out

    into = tmp_path / "local-copy"  # --resume URL into a new folder
    step3 = f"{out}/checkpoint-00000003.pt"
    assert train(["--store", store, "--out", str(into), "--steps", "6", *TINY, "--resume", step3]) == 0
    assert checkpoint.load(into / "checkpoint-last.pt")["step"] == 6

    # as on another machine: each run writes first into a local folder of its own, gone when it ends
    assert train([*run, "--log-every", "2", "--resume"]) == 0
    assert "resuming s3://runs/x/checkpoint-last.pt at step 3" in capsys.readouterr().out
    assert checkpoint.load(f"{out}/checkpoint-last.pt")["step"] == 6
    rows = read(s3, "runs", "x/metrics.csv").decode().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4", "6"]  # the run's rows, continued

    assert evaluate(["--checkpoint", f"{out}/checkpoint-last.pt", "--store", store, "--max-images", "3"]) == 0
    assert json.loads(read(s3, "runs", "x/evaluation.json"))["images"] == 3  # beside the checkpoint, in the bucket
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 56, 3), 128, np.uint8)).save(photo)
    assert colorize(["--checkpoint", f"{out}/checkpoint-last.pt", str(photo), "--out", str(tmp_path / "c")]) == 0
    assert Image.open(tmp_path / "c" / "photo.png").size == (56, 40)
    config = f"{out}/config.json"  # a run's config.json, read from the bucket
    assert train(["--config", config, "--out", str(tmp_path / "again"), "--steps", "2"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["width"] == 0.125


def test_a_url_where_none_is_taken_is_refused_in_one_line(tiny_store, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s3.bucket("runs")
    out = "s3://runs/y"
    assert train(["--store", str(tiny_store[0]), "--out", out, "--steps", "2", *TINY]) == 0
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    assert colorize(["--checkpoint", f"{out}/checkpoint-last.pt", str(photo), "--out", "s3://runs/pictures"]) == 2
    assert colorize(["--checkpoint", f"{out}/checkpoint-last.pt", "s3://runs/p.png", "--out", "c"]) == 2
    assert train(["--store", str(tiny_store[0]), "--out", "ftp://host/run", "--steps", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("error:")] == err[-3:] and len(err[-1]) < 200
    assert "a URL" in err[-3] and "a URL" in err[-2] and "unsupported scheme" in err[-1]
    assert not any(tmp_path.glob("s3:*")) and not any(tmp_path.glob("ftp:*")) and not (tmp_path / "c").exists()


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_checkpoint_object_is_refused_in_one_line(damage, tiny_store, s3, tmp_path, capsys):
    s3.bucket("runs")
    out = f"s3://runs/{damage}"
    assert train(["--store", str(tiny_store[0]), "--out", out, "--steps", "2", *TINY]) == 0
    key = f"{damage}/checkpoint-last.pt"
    good = read(s3, "runs", key)
    bad = good[: len(good) // 2] if damage == "truncated" else json.dumps({"model": 1}).encode()
    obstore.put(s3.client("runs"), key, bad)
    capsys.readouterr()
    assert evaluate(["--checkpoint", f"{out}/checkpoint-last.pt", "--store", str(tiny_store[0])]) == 2
    assert train(["--store", str(tiny_store[0]), "--out", out, "--steps", "4", *TINY, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") and "s3://runs/" in e and len(e) < 250 for e in err)


def test_a_server_that_dies_while_a_checkpoint_is_written_keeps_the_previous_one(tiny_store, s3, tmp_path, capsys,
                                                                                 monkeypatch):  # fmt: skip
    s3.bucket("runs")
    proxy = LatencyProxy(("127.0.0.1", s3.port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        proxy.cut_uploads_over(1 << 20, seconds=60, skip=1)  # the step-2 checkpoint goes up, the step-4 one dies
        argv = ["--store", str(tiny_store[0]), "--out", "s3://runs/cut", "--steps", "6", *TINY,
                "--storage-option", "retry_timeout=2", "--storage-option", "max_retries=1"]  # fmt: skip
        assert train(argv) == 2
    finally:
        proxy.stop()
    assert proxy.cuts == 1
    err = capsys.readouterr().err
    assert "warning: step 4: checkpoint not written to s3://runs/cut" in err and "training goes on" in err
    assert err.strip().splitlines()[-1].startswith("error: ")  # the last checkpoint could not be written either
    state = torch.load(io.BytesIO(read(s3, "runs", "cut/checkpoint-last.pt")), weights_only=True)
    assert state["step"] == 2  # the previous checkpoint, whole
