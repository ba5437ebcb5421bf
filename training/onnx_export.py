"""A model as ONNX (`colorize-export --onnx`): dynamic batch, height and width (multiples of 32), exported by
torch's own exporter (torch.export, then ONNX), checked with `onnx.checker.check_model(full_check=True)`. The
model folder's config.json rides in the file's metadata (`colorize_config`), so that `colorize --onnx FILE`
needs nothing beside it; `training.onnx_colorize` runs it without torch."""

import json
import logging
import re
import warnings

import torch

from pipeline.common.cli import Refused, one_line
from training.modelconfig import ONNX_METADATA

MAX_SIDE = 8192  # the exporter's bound on height and width; a store's images are at most this (pipeline.store)


class ExportFailed(Refused):
    """A system whose graph torch's ONNX exporter cannot express."""


class _Outputs(torch.nn.Module):
    """The model with its outputs as a flat tuple: colour, and class logits when it has them."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, L: torch.Tensor):
        colour, classes = self.model(L)
        return (colour,) if classes is None else (colour, classes)


def export_onnx(model: torch.nn.Module, config: dict, path) -> None:
    """Write `model` (eval mode, CPU) as ONNX at `path`, checked, with `config` in its metadata."""
    import onnx

    size = int(config["input"]["size"])
    wrapped = _Outputs(model.eval().cpu())
    names = ["colour", "class"] if config["outputs"]["class"] else ["colour"]
    batch = torch.export.Dim("batch", min=1, max=1024)
    h, w = (torch.export.Dim(n, min=1, max=MAX_SIDE // 32) for n in ("h32", "w32"))
    example = torch.zeros(2, 1, size, size)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on torchvision's absent operators
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            dims = {"L": {0: batch, 2: 32 * h, 3: 32 * w}}
            program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=["L"], output_names=names,
                                        dynamic_shapes=dims, verbose=False)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; each is this refusal
        why = re.sub(r"\x1b\[[0-9;]*m", "", one_line(e)).split(". ")[0][:200]  # the exporter colours its text
        raise ExportFailed(f"{config['system']} does not export to ONNX ({type(e).__name__}: {why})") from None
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA, json.dumps(config)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    check_parity(wrapped, path, size)


def check_parity(model: torch.nn.Module, path, size: int, tolerance: float = 1e-3) -> float:
    """The largest difference between onnxruntime's and PyTorch's outputs on a smooth test input at the training
    size and at 1.5 times its width; ExportFailed beyond `tolerance`."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for h, w in ((size, size), (size, size + size // 64 * 32 or 32)):
        y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        L = (0.5 + 0.4 * np.sin(7 * x + 3 * y) * np.cos(5 * y)).astype(np.float32)[None, None].repeat(2, 0)
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(L))]
        got = sess.run(None, {"L": L})
        worst = max([worst] + [float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)])
    if worst > tolerance:
        raise ExportFailed(f"{path}: onnxruntime's outputs differ from PyTorch's by {worst:.2g} (> {tolerance})")
    return worst
