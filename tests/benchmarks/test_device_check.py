"""The GPU check script, run with every part on the CPU (the machine CI has): each part measures, and agrees."""

import json

import pytest
import torch

from benchmarks.device_check import main
from tests.benchmarks.report_checks import assert_no_machine_paths


def test_device_check_runs_every_part_on_the_cpu(tmp_path, tiny_store):
    argv = ["--device", "cpu", "--quick", "--store", str(tiny_store[0]), "--out", str(tmp_path)]
    assert main(argv) == 0
    r = json.loads((tmp_path / "device_check.json").read_text())["results"]
    assert r["kernels"]["colours"] == 1 << 24 and r["kernels"]["bins_differ"] == 0
    assert r["kernels"]["float_bins_differ"] == 0
    assert r["train"]["full_images_per_s"] > 0 and r["train"]["loader_images_per_s"] > 0
    assert set(r["loader"]["images_per_s"]) == {"random", "quasi"}
    if "not_measured" not in r["dali"]:  # needs the ImageNet sample
        assert r["dali"]["identical_images"] == r["dali"]["images"] > 0
    assert_no_machine_paths(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_a_cuda_device_every_part_says_not_measured(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "device_check.json").read_text())["results"]
    assert all(v == {"not_measured": "no CUDA device"} for v in r.values())
