"""The training benchmark runs end to end with tiny settings and writes a consistent report."""

import json

from benchmarks.__main__ import main
from training.models import MODELS


def test_train_report(tmp_path, tiny_store):
    # not width 0.0625: a 4 -> 8 channel 1x1 stride-2 channels_last convolution at 64 x 64 corrupts the heap
    # in oneDNN's backward (torch 2.13 CPU)
    argv = ["train", "--width", "0.125", "--size", "64", "--batch", "2", "--steps", "1", "--warmup", "1"]
    argv += ["--store", str(tiny_store[0]), "--loader-batches", "2"]
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "train.json").read_text())
    assert set(data["variants"]) == set(MODELS)
    for r in data["variants"].values():
        assert r["images_per_s"] > 0 and r["params"] > 0 and r["fwd_flops_per_image"] > 0
        assert r["paper_params"] > r["params"]
    assert 50e9 <= data["variants"]["full"]["paper_fwd_flops_per_image"] <= 200e9
    assert data["peak"]["flops_per_s"] > 0
    assert data["settings"] == data["settings"] | {"width": 0.125, "size": 64, "batch": 2, "steps": 1}
    md = (tmp_path / "train.md").read_text()
    assert "Goal on one H100: >= 1000 images/s for full in bf16" in md
    assert "not measured (no GPU here)" in md
    assert data["loader"]["images_per_s"] > 0 and data["loader_over_full"] > 0 and data["loader"]["threads"] >= 1
