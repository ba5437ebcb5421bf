"""The loader benchmark runs on a tiny store and writes the report the issue asks for."""

import json

from benchmarks.__main__ import main


def test_loader_report(tmp_path, tiny_store):
    store = str(tiny_store[0])
    argv = ["loader", "--store", store, "--threads", "2", "--batch", "4", "--batches", "3", "--warmup", "1"]
    assert main([*argv, "--rounds", "1", "--zarr-batches", "1", "--cold", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loader.json").read_text())
    assert set(data["images_per_s"]) == {"random", "quasi"} and min(data["images_per_s"].values()) > 0
    assert data["decode_bound_images_per_s"] > 0 and data["zarr_python_images_per_s"] > 0
    assert data["threads"] == 2 and data["store_images"] == 12 and data["store_bytes"] > 0
    assert 0 < data["peak_rss_mb"] < 4000 and set(data["cold_images_per_s"]) == {"random", "quasi"}
    md = (tmp_path / "loader.md").read_text()
    assert "of the decode bound" in md and "## Targets" in md
