"""A model folder's ONNX graph: its outputs match PyTorch's on real photos at two sizes, `colorize --onnx` runs
where torch cannot be imported, and a tampered graph is refused in one line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.colorize import main as colorize


def L_of(path: Path) -> np.ndarray:
    from training.photos import read_L

    return read_L(path)


def test_onnx_logits_and_categories_match_pytorch_on_real_photos_at_two_sizes(folder, photos):
    import onnx
    import onnxruntime as ort

    from training.modelfolder import load_folder

    proto = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 1 and isinstance(dims[2], str) and isinstance(dims[3], str)
    model, _, _ = load_folder(folder)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for h, w in ((64, 64), (96, 160)):  # the training size and another: dynamic height and width
        x = np.stack([np.asarray(Image.fromarray(L_of(p).astype(np.uint8)).resize((w, h)), np.float32)[None] / 100
                      for p in sorted(photos.glob("*.jpg"))])  # fmt: skip
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(x)) if t is not None]
        got = sess.run(None, {"L": x})
        assert len(got) == 2 and all(a.shape == b.shape for a, b in zip(got, want, strict=True))
        assert max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)) <= 1e-3
        assert (got[0].argmax(1) == want[0].argmax(1)).mean() >= 0.999


@pytest.mark.parametrize("recovery", ["argmax", "annealed"])
def test_colorize_through_onnx_matches_pytorch_within_one_level(folder, photos, tmp_path, recovery):
    from training.onnx_colorize import dispatch

    assert colorize(["--model", str(folder), str(photos), "--out", str(tmp_path / "pt"), "--recovery", recovery]) == 0
    onnx = ["--onnx", str(folder / "model.onnx"), str(photos), "--out", str(tmp_path / "ox"), "--recovery", recovery]
    assert dispatch(onnx) == 0
    outputs = sorted((tmp_path / "pt").rglob("*.png"))
    assert len(outputs) == 8
    for f in outputs:
        a = np.asarray(Image.open(f), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "ox" / f.relative_to(tmp_path / "pt")), dtype=np.int16)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, f.name  # the full-resolution colour image


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
from training.onnx_colorize import dispatch
code = dispatch(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(code)
"""


def test_colorize_onnx_runs_where_torch_cannot_be_imported(folder, photos, tmp_path):
    from training.onnx_colorize import dispatch

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    args = ["--onnx", str(folder / "model.onnx"), str(photos / "1.png"), "--out"]
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args, str(tmp_path / "a")], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dispatch([*args, str(tmp_path / "b")]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / "1.png")), np.asarray(Image.open(tmp_path / "b" / "1.png"))
    )
    torch_path = [sys.executable, "-c", BLOCK_TORCH, str(photos), "--out", str(tmp_path / "c"), "--checkpoint", "x"]
    blocked = subprocess.run(torch_path, env=env, capture_output=True, text=True, timeout=300)
    assert blocked.returncode != 0 and "torch is not installed here" in blocked.stderr  # the test can fail


def test_a_system_torchs_exporter_cannot_express_is_refused_in_one_line():
    from training.models import create_model
    from training.onnx_export import ExportFailed, export_onnx

    model = create_model("cheng15", 1 / 8, "", 1000)
    config = {"system": "cheng15", "input": {"size": 64}, "outputs": {"class": None}}
    with pytest.raises(ExportFailed, match=r"^cheng15 does not export to ONNX \(") as e:
        export_onnx(model, config, "/nonexistent/m.onnx")
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("head", "recovery"), [("classify", "argmax"), ("classify", "annealed"), ("l1", "regression")])
def test_the_numpy_recovery_is_torchs(head, recovery):
    from training.loss import AB_SCALE, T_DEFAULT, recover_ab
    from training.onnx_colorize import recover

    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 2 if head == "l1" else 313, 5, 7, generator=g) * (0.3 if head == "l1" else 4)
    want = recover_ab(out, head, recovery).double().numpy()
    got = recover(out.numpy(), head, recovery, T_DEFAULT, AB_SCALE)
    assert np.abs(got - want).max() < 1e-3


def _onnx_with(folder: Path, out: Path, change) -> Path:
    import json as json_

    import onnx

    proto = onnx.load(folder / "model.onnx")
    entry = next(p for p in proto.metadata_props if p.key == "colorize_config")
    config = json_.loads(entry.value)
    change(config, proto)
    entry.value = json_.dumps(config)
    onnx.save(proto, out)
    return out


def _rename_input(config: dict, proto) -> None:
    old = proto.graph.input[0].name
    proto.graph.input[0].name = "X"
    for node in proto.graph.node:
        node.input[:] = ["X" if name == old else name for name in node.input]


ONNX_TAMPERED = {
    "T missing": (lambda c, p: c.pop("T"), "T is missing or out of bounds"),
    "size to run out of memory": (lambda c, p: c["input"].update(size=8192), "input.size is missing or out of bounds"),
    "an unknown head": (lambda c, p: c.update(head="nope"), "head is missing or out of bounds"),
    "recoveries not a list": (lambda c, p: c.update(recoveries=5), "recoveries is missing or out of bounds"),
    "the output renamed": (lambda c, p: setattr(p.graph.output[0], "name", "other"), "not a model onnxruntime loads"),
    "the input renamed": (_rename_input, "does not take L (float) and give colour"),
}


@pytest.mark.parametrize("case", list(ONNX_TAMPERED))
def test_a_tampered_onnx_file_is_refused_in_one_line_leaving_nothing(case, folder, photos, tmp_path, capsys):
    from training.onnx_colorize import dispatch

    change, message = ONNX_TAMPERED[case]
    bad = _onnx_with(folder, tmp_path / "bad.onnx", change)
    assert dispatch(["--onnx", str(bad), str(photos / "0.jpg"), "--out", str(tmp_path / "o" / "deep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()
