"""The categories benchmark runs end to end and writes a consistent report."""

import json

import pytest

from benchmarks.__main__ import main
from tests.benchmarks.report_checks import assert_no_machine_paths

pytestmark = pytest.mark.slow


def test_categories_report(tmp_path):
    assert main(["categories", "--rounds", "2", "--zhang-rounds", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "categories.json").read_text())
    assert data["mismatches_vs_zhang"]["fast"] == 0 and data["weight_mismatches_fast_vs_zhang"] == 0
    assert data["batch"]["shape"] == [64, 224, 224, 3]
    assert set(data["methods"]) == {"zhang", "plain_numpy", "fast", "floor", "fast_l1", "floor_l1"}
    assert data["fast_l1_over_floor"] > 0
    assert data["speedup_fast_vs_zhang"] > 1
    assert "fast path vs Zhang" in (tmp_path / "categories.md").read_text()
    assert_no_machine_paths(tmp_path)  # its batch's photos are named, not located
