"""Reports are committed and read elsewhere: no report names a path of the machine that measured (a temporary
folder, the checkout, the development photos), whatever a benchmark hands its writer."""

import json

from benchmarks.report import named, write
from tests.benchmarks.report_checks import ROOT, assert_no_machine_paths, machine_paths


def test_the_writer_names_the_paths_it_is_handed(tmp_path):
    store = tmp_path / "s.zarr"
    data = {"store": str(store), "url": "s3://bucket/tmp/x.zarr", "n": 3, "under": str(ROOT / "reports"),
            "nested": [f"file://{store}", {"source": f"64 photos of {tmp_path / 'photos'}."}]}  # fmt: skip
    md = (f"Store {store}: 12 images; photos of {tmp_path / 'photos'}. docs/store.md, 1.0x / 2.0x, 9 images/s, "
          "L/c/0/0/0, s3://bucket/tmp/x.zarr\n")  # fmt: skip
    write("t", data, md, tmp_path / "out", show=False)
    assert_no_machine_paths(tmp_path / "out")
    got = json.loads((tmp_path / "out" / "t.json").read_text())
    assert got["store"] == "s.zarr" and got["url"] == "s3://bucket/tmp/x.zarr" and got["under"] == "reports"
    assert got["nested"] == ["s.zarr", {"source": "64 photos of photos."}] and got["n"] == 3
    text = (tmp_path / "out" / "t.md").read_text()
    assert text == ("Store s.zarr: 12 images; photos of photos. docs/store.md, 1.0x / 2.0x, 9 images/s, L/c/0/0/0, "
                    "s3://bucket/tmp/x.zarr\n")  # fmt: skip


def test_the_committed_reports_name_no_path_of_a_machine():
    assert_no_machine_paths(ROOT / "reports" / "benchmarks")


def test_named_gives_a_name_never_a_path(tmp_path, monkeypatch):
    import benchmarks.photos

    assert named(ROOT / "reports" / "benchmarks") == "reports/benchmarks"
    assert named(tmp_path / "s.zarr") == named(f"file://{tmp_path}/s.zarr") == "s.zarr"
    assert named("s3://bucket/s.zarr") == "s3://bucket/s.zarr" and named(None) is None and named("") == ""
    monkeypatch.setattr(benchmarks.photos, "imagenet_sample", lambda: tmp_path)
    assert "ImageNet sample" in named(tmp_path) and not machine_paths(named(tmp_path))


def test_the_photos_a_report_describes_are_named_not_located():
    from benchmarks.photos import photo_batch

    batch, source = photo_batch(2, 32)
    assert batch.shape == (2, 32, 32, 3) and source and not machine_paths(source) and "/" not in source
