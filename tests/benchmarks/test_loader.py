"""The loader benchmark runs on a tiny store, local and in a bucket of a real S3 server, and writes its report."""

import json

from benchmarks.__main__ import main
from tests.benchmarks.report_checks import assert_no_machine_paths

QUICK = ["--threads", "2", "--batch", "4", "--batches", "3", "--warmup", "1", "--rounds", "1", "--zarr-batches", "1"]


def test_loader_report(tmp_path, tiny_store):
    store = str(tiny_store[0])
    assert main(["loader", "--store", store, *QUICK, "--cold", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loader.json").read_text())
    assert set(data["images_per_s"]) == {"random", "quasi"} and min(data["images_per_s"].values()) > 0
    assert data["decode_bound_images_per_s"] > 0 and data["zarr_python_images_per_s"] > 0
    assert data["threads"] == 2 and data["store_images"] == 12 and data["store_bytes"] > 0
    assert 0 < data["peak_rss_mb"] < 4000 and set(data["cold_images_per_s"]) == {"random", "quasi"}
    md = (tmp_path / "loader.md").read_text()
    assert "of the decode bound" in md and "## Targets" in md
    assert_no_machine_paths(tmp_path)


def test_loader_report_from_a_bucket_behind_added_latency(tmp_path, tiny_store, s3):
    url = s3.put_tree(tiny_store[0], "loader-bench", "s.zarr")
    assert main(["loader", "--store", url, *QUICK, "--latency-ms", "5", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loader.json").read_text())
    assert set(data["remote"]) == {"random_cold", "quasi_cold", "random_warm", "quasi_warm"}
    assert set(data["local"]) == {"random", "quasi"} and data["latency_ms"] == 5
    assert min(data["remote"].values()) > 0 and min(data["local"].values()) > 0 and data["peak_rss_mb"] > 0
    assert data["store_images"] == 12 and "From the bucket, 5 ms added" in (tmp_path / "loader.md").read_text()
    assert_no_machine_paths(tmp_path)  # the local copy it measured lay in a temporary folder
