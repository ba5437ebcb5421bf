"""The comparison of every registered system runs at a tiny budget and writes the report it promises."""

import json

from benchmarks.__main__ import main
from training.models import MODELS


def test_quality_report_covers_every_system(tmp_path, tiny_store):
    store = str(tiny_store[0])
    argv = ["quality", "--store", store, "--eval-store", store, "--steps", "2", "--size", "64", "--batch", "2"]
    assert main([*argv, "--seeds", "2", "--max-images", "3", "--grid-images", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "quality.json").read_text())
    assert set(data["systems"]) == set(MODELS)
    for name, r in data["systems"].items():
        own = data["own_recovery"][name]
        for key in (own, "guided"):
            assert {"psnr", "ssim", "colourfulness", "auc", "auc_rebalanced", "psnr_spread"} <= set(r[key])
        assert r["describe"]["params"] >= r["params_at_width"] > 0 and r["train_images_per_s"] > 0
    assert data["systems"]["zhang16"]["annealed"] and data["systems"]["zhang16"]["argmax"]
    assert 0 < data["gray"]["psnr"] < 60 and data["ground_truth_colourfulness"] > 0
    assert (tmp_path / "quality.grid.png").stat().st_size > 1000
    md = (tmp_path / "quality.md").read_text()
    assert "Their papers' figures" in md and "25.8803" in md


def test_quality_curve_and_causes(tmp_path, tiny_store):
    """--curve trains each system once and evaluates it at every budget; --causes changes full one way at a time."""
    import numpy as np

    store = str(tiny_store[0])
    np.save(tmp_path / "prior.npy", np.full(313, 1 / 313))
    argv = ["quality", "--store", store, "--eval-store", store, "--steps", "2", "--size", "64", "--batch", "2",
            "--models", "full", "--curve", "1,2", "--curve-models", "unet,full", "--causes", "--zhang-prior",
            str(tmp_path / "prior.npy"), "--seeds", "2", "--max-images", "3", "--grid-images", "1"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "quality.json").read_text())
    for name in ("unet", "full"):
        assert [r["steps"] for r in data["curve"][name]] == [1, 2]
        assert all(0 <= r["overflow"][0] <= 1 and r["overflow"][1] >= 0 for r in data["curve"][name])
    assert len(data["table3_order"]) == 2
    changes = [r["change"] for r in data["causes"]]
    assert changes[:2] == ["full as in the paper (argmax; the store's prior smoothed)",
                           "annealed recovery instead of argmax"]  # fmt: skip
    assert any("Zhang's ImageNet prior" in c for c in changes) and any("lambda 1" in c for c in changes)
    assert any("raw prior (not smoothed)" in c for c in changes)
    assert data["causes"][0]["psnr_delta"] == 0
    md = (tmp_path / "quality.md").read_text()
    assert "## Along one run" in md and "## Causes of the colour overflow" in md
    assert (tmp_path / "quality.curve.png").stat().st_size > 1000
