"""Colorize photos with an exported model through onnxruntime, without torch: `colorize --onnx model.onnx
INPUT... --out DIR [--recovery R] [--max-pixels N]`.

The same steps as `training.colorize`, in numpy: the full-resolution L, the network's input (L / 100 resized to
the training size: an area mean when shrinking, bilinear otherwise, as torch's), the colour recovery (Eq. 15-16
or Zhang's annealed mean), and the (a, b) map upsampled bilinearly to the photo and joined with its L (Eq. 17),
in row tiles. The model's settings come from the file's own metadata (`training.onnx_export`). Exit codes as
`colorize`'s.
"""

import json
import sys

import numpy as np

from kernels.gamut import CENTERS_F32
from kernels.lab import WHITE_D65, XYZ_FROM_RGB
from pipeline.common.cli import ArgumentParser, Refused, command, one_line, positive_int
from pipeline.common.extras import require
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.storage import location
from pipeline.storage.files import read_file
from training.modelconfig import ONNX_METADATA, out_of_bounds
from training.photos import TILE, batches, inputs, quiet_pillow, write_outputs


def session(path: str):
    """(the onnxruntime session, the model's config) of an exported file; Refused if it is not one."""
    import onnxruntime as ort

    try:
        data = read_file(location(path))  # a FIFO or a folder refused before onnxruntime would block on it
    except OSError as e:
        raise Refused(f"--onnx {path}: {e.strerror or one_line(e)}") from None
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors for a missing or damaged file: one refusal
        raise Refused(f"--onnx {path}: not a model onnxruntime loads ({one_line(e)[:160]})") from None
    meta = sess.get_modelmeta().custom_metadata_map
    try:
        config = json.loads(meta[ONNX_METADATA])
    except (KeyError, ValueError, RecursionError):
        raise Refused(f"--onnx {path}: no colorize_config in its metadata (not exported by colorize-export)") from None
    problem = out_of_bounds(config) if isinstance(config, dict) else "not a config"
    if problem:
        raise Refused(f"--onnx {path}: its colorize_config: {problem}")
    inputs_ = {i.name: i.type for i in sess.get_inputs()}
    if inputs_ != {"L": "tensor(float)"} or "colour" not in {o.name for o in sess.get_outputs()}:
        raise Refused(f"--onnx {path}: its graph does not take L (float) and give colour, as an exported model does")
    return sess, config


def _weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w1) of a bilinear resize from n_in to n_out samples, align_corners=False, as torch computes."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), n_in - 1)
    return i0, np.where(i0 < n_in - 1, i0 + 1, i0), np.clip(src - i0, 0.0, 1.0)


def bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W) -> (..., h, w), bilinear, align_corners=False."""
    r0, r1, wr = _weights(x.shape[-2], h)
    c0, c1, wc = _weights(x.shape[-1], w)
    x = x[..., r0, :] * (1 - wr)[:, None] + x[..., r1, :] * wr[:, None]
    return x[..., c0] * (1 - wc) + x[..., c1] * wc


def area(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W) -> (h, w): the mean of each output pixel's window (torch's adaptive average pooling)."""
    for axis, n_out in ((0, h), (1, w)):
        n = x.shape[axis]
        lo, hi = (np.arange(n_out) * n) // n_out, -((-(np.arange(n_out) + 1) * n) // n_out)
        c = np.concatenate([np.zeros_like(np.take(x, [0], axis)), np.cumsum(x, axis=axis, dtype=np.float64)], axis)
        x = (np.take(c, hi, axis) - np.take(c, lo, axis)) / np.expand_dims(hi - lo, 1 - axis)
    return x


def network_input(L: np.ndarray, size: int) -> np.ndarray:
    small = (L.astype(np.float32) / np.float32(100.0)).astype(np.float64)
    resized = area(small, size, size) if min(L.shape) >= size else bilinear(small, size, size)
    return resized.astype(np.float32)[None]


def recover(colour: np.ndarray, head: str, recovery: str, T: float, ab_scale: float) -> np.ndarray:
    """(B, 2, h, w) float64 (a, b) of the network's colour output."""
    if head in ("l1", "l2"):
        return colour.astype(np.float64) * ab_scale
    centers = CENTERS_F32.astype(np.float64)
    if recovery == "argmax":
        return np.moveaxis(centers[colour.argmax(1)], -1, 1)
    z = colour.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    p = np.exp((logp - logp.max(1, keepdims=True)) / T)
    p /= p.sum(1, keepdims=True)
    return np.einsum("bqhw,qc->bchw", p, centers)


def lab_to_rgb8(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) of L (...) and ab (..., 2): CIE Lab (D65) -> sRGB, clipped, rounded (scikit-image's lab2rgb)."""
    y = (L + 16.0) / 116.0
    fxyz = np.stack([ab[..., 0] / 500.0 + y, y, np.maximum(y - ab[..., 1] / 200.0, 0.0)], axis=-1)
    xyz = np.where(fxyz > 0.2068966, fxyz**3, (fxyz - 16.0 / 116.0) / 7.787) * WHITE_D65
    lin = xyz @ np.linalg.inv(XYZ_FROM_RGB).T
    rgb = np.where(lin > 0.0031308, 1.055 * np.maximum(lin, 0.0) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def join(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) of the full L and the (2, h, w) map upsampled to it (Eq. 17), in row tiles."""
    H, W = L.shape
    wide = bilinear(ab, ab.shape[1], W)  # (2, h, W): the width pass at the map's own height
    r0, r1, wr = _weights(ab.shape[1], H)
    out = np.empty((H, W, 3), dtype=np.uint8)
    rows = max(1, TILE // W)
    for r in range(0, H, rows):
        s = slice(r, min(H, r + rows))
        tile = wide[:, r0[s]] * (1 - wr[s])[:, None] + wide[:, r1[s]] * wr[s][:, None]
        out[s] = lab_to_rgb8(L[s], np.moveaxis(tile, 0, -1))
    return out


def colorize(sess, config: dict, Ls: list[np.ndarray], recovery: str) -> list[np.ndarray]:
    size = int(config["input"]["size"])
    try:
        colour = sess.run(["colour"], {"L": np.stack([network_input(L, size) for L in Ls])})[0]
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors for a graph that does not run: one refusal
        raise Refused(f"the ONNX graph does not run on these photos ({one_line(e)[:160]})") from None
    ab = recover(colour, config["head"], recovery, float(config["T"]), float(config["ab_scale"]))
    return [join(L, ab[k]) for k, L in enumerate(Ls)]


@command
def main(argv=None) -> int:

    p = ArgumentParser(prog="colorize --onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, help="model.onnx written by colorize-export --onnx")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="the folder for the results (created)")
    p.add_argument("--recovery", choices=("argmax", "annealed", "regression"), help="default: the model's own")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"larger images are refused from their header (default {DEFAULT_MAX_PIXELS:,})")  # fmt: skip
    args = p.parse_args(argv)
    require("onnx", "colorize --onnx")
    quiet_pillow()
    sess, config = session(args.onnx)
    if args.recovery and args.recovery not in config["recoveries"]:
        takes = ", ".join(config["recoveries"])
        raise Refused(f"{config['system']} takes the recoveries {takes}, not {args.recovery!r}")
    recovery = args.recovery or config["recovery"]
    files = inputs(args.inputs)
    if not files:
        raise Refused("no input images found")

    def results():
        for batch in batches(files, args.max_pixels):
            rgbs = colorize(sess, config, [L for _, _, L in batch], recovery)
            yield from ((f, rel, rgb) for (f, rel, _), rgb in zip(batch, rgbs, strict=True))

    return write_outputs(args.out, len(files), results())


def dispatch(argv=None) -> int:
    """The `colorize` command: through onnxruntime with --onnx (torch never imported), else PyTorch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--onnx" or a.startswith("--onnx=") for a in argv):
        return main(argv)
    from training.colorize import main as torch_main

    return torch_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
