"""The core install: `pip install colorize` without extras, into a fresh virtual environment, colorizes a photo
with a checkpoint (command line and web demo) exactly as the full install does, and the commands that need an
extra say which one."""

import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import real_photos
from training.colorize import main as colorize_main
from training.run import TrainConfig, train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PROJECT = ["pyproject.toml", "README.md", "LICENSE", "kernels", "pipeline", "training", "flows", "benchmarks"]


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The bin folder of a fresh venv holding the project's core only (installed from a copy of its files)."""
    tmp = tmp_path_factory.mktemp("core")
    (tmp / "src").mkdir()
    for name in PROJECT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, tmp / "src" / name)
    subprocess.run([sys.executable, "-m", "venv", tmp / "venv"], check=True)
    pip = [tmp / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt"]
    subprocess.run([*pip, tmp / "src"], check=True, cwd=tmp)
    return tmp / "venv" / "bin"


@pytest.fixture(scope="module")
def model(tiny_store, tmp_path_factory):
    """(checkpoint, a real photo as PNG, so that no JPEG decoder version can differ between the installs)."""
    tmp = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(store=str(tiny_store[0]), out=str(tmp / "run"), width=1 / 8, size=64, batch_size=4, steps=2,
                      holdout=0.25, eval_images=4)  # fmt: skip
    train(cfg)
    (_, jpeg), *_ = real_photos(1)
    (tmp / "photo.jpg").write_bytes(jpeg)
    Image.open(tmp / "photo.jpg").convert("RGB").save(tmp / "photo.png")
    return tmp / "run" / "checkpoint-last.pt", tmp / "photo.png"


def test_the_core_has_no_pipeline_packages(core):
    for module in ("nvidia.dali", "prefect", "distributed", "tensorboard", "skimage"):
        found = subprocess.run([core / "python", "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{module} is in the core install"


def test_the_core_colorizes_as_the_full_install_does(core, model, tmp_path):
    checkpoint, photo = model
    done = subprocess.run([core / "colorize", "--checkpoint", checkpoint, photo, "--out", tmp_path / "core"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert colorize_main(["--checkpoint", str(checkpoint), str(photo), "--out", str(tmp_path / "full")]) == 0
    ours, full = (np.asarray(Image.open(tmp_path / d / "photo.png")) for d in ("core", "full"))
    assert ours.shape == full.shape and np.array_equal(ours, full)


def test_the_core_serves_the_demo(core, model, tmp_path):
    checkpoint, photo = model
    proc = subprocess.Popen([core / "colorize-demo", "--checkpoint", checkpoint, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        url = proc.stdout.readline().split()[-1]  # "colorize demo: http://127.0.0.1:PORT/"
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="p.png"\r\n\r\n'.encode()
                + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
        request = urllib.request.Request(url + "colorize", body,
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as r:
            out = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (out["width"], out["height"]) == Image.open(photo).size and out["color"].startswith("data:image/png")


@pytest.mark.parametrize(
    "command, extra", [(["colorize-preprocess", "src", "s.zarr"], "pipeline"), (["colorize-train"], "train")]
)
def test_commands_that_need_an_extra_name_it(core, tmp_path, command, extra):
    done = subprocess.run([core / command[0], *command[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and f"pip install 'colorize[{extra}]'" in done.stderr


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """The bin folder of a fresh venv holding the project without torch: its files, and what `colorize --onnx`
    imports (numpy, numba, Pillow, PyYAML, onnxruntime), as a deployment installs them."""
    tmp = tmp_path_factory.mktemp("deploy")
    subprocess.run([sys.executable, "-m", "venv", tmp / "venv"], check=True)
    pip = [tmp / "venv" / "bin" / "python", "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "numpy", "numba", "Pillow", "pyyaml", "onnxruntime"], check=True, cwd=tmp)
    src = tmp / "src"
    src.mkdir()
    for name in PROJECT:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    subprocess.run([*pip, "--no-deps", src], check=True, cwd=tmp)
    return tmp / "venv" / "bin"


def test_onnx_colorizes_in_an_environment_without_torch(no_torch, model, tmp_path):
    from training.export import main as export
    from training.onnx_colorize import dispatch

    checkpoint, photo = model
    assert export([str(checkpoint), "--out", str(tmp_path / "m"), "--onnx"]) == 0
    assert subprocess.run([no_torch / "python", "-c", "import torch"], capture_output=True).returncode != 0
    onnx = ["--onnx", str(tmp_path / "m" / "model.onnx"), str(photo), "--out"]
    done = subprocess.run([no_torch / "colorize", *onnx, tmp_path / "deploy"], capture_output=True, text=True,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dispatch([*onnx, str(tmp_path / "here")]) == 0
    assert colorize_main(["--model", str(tmp_path / "m"), str(photo), "--out", str(tmp_path / "torch")]) == 0
    deployed, here, torch_ = (
        np.asarray(Image.open(tmp_path / d / "photo.png"), np.int16) for d in ("deploy", "here", "torch")
    )
    assert np.array_equal(deployed, here) and np.abs(deployed - torch_).max() <= 1
