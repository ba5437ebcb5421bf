"""Colorize photos: `python -m training.colorize --checkpoint C INPUT... --out DIR [--reference PHOTO]`.

INPUTs are files or folders (searched recursively), any size, mode or format Pillow reads. Each image is
converted to L (colour inputs too), the network runs on L resized to its training size, and the predicted
(a, b) (Eq. 15-16) is upsampled to the input's full resolution (Eq. 17) and recombined with the original
full-resolution L. Output: DIR/<name>.png. An unreadable file is reported and skipped; the others are still
colorized. With `--reference PHOTO` the colours are steered towards the reference's (`training.guidance`, seed
001's global histogram; `--reference-strength`, default 1). Exit code 0 if all succeeded, 1 if some failed, 2
on bad arguments or when nothing was readable.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from training.loss import upsample_ab

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


def inputs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def read_L(path: Path) -> np.ndarray:
    """L in [0, 100] (H, W) float64 of any image (EXIF orientation applied)."""
    from skimage.color import rgb2lab

    from pipeline.decode import pil_decode

    return rgb2lab(pil_decode(path.read_bytes()))[..., 0]


@torch.no_grad()
def colorize_L(model, L: np.ndarray, size: int, head: str, recovery: str = "argmax", reference=None,
               strength: float = 1.0) -> np.ndarray:  # fmt: skip
    """uint8 RGB (H, W, 3) for L (H, W) in [0, 100]: the network at size x size on the model's device, ab
    upsampled to H x W there; guided by `reference` (`training.guidance.Reference`) when given."""
    import torch.nn.functional as F

    from training.evaluate import lab_to_rgb8
    from training.guidance import guided_ab

    device = next(model.parameters()).device
    x = torch.from_numpy(L).float().div(100.0)[None, None].to(device)  # (1, 1, H, W)
    x = F.interpolate(x, size=(size, size), mode="area" if min(L.shape) >= size else "bilinear")
    out, _ = model(x)
    refs = [reference] if reference is not None else None
    ab = upsample_ab(guided_ab(out, head, recovery, refs, strength), L.shape)  # (1, 2, H, W)
    return lab_to_rgb8(L, ab[0].permute(1, 2, 0).float().cpu().numpy())


def main(argv=None) -> int:
    from PIL import Image

    from training.checkpoint import add_model_arguments, load_model, recovery_of
    from training.guidance import Reference

    p = argparse.ArgumentParser(prog="python -m training.colorize", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", help="a colour photo whose colours the results are steered towards")
    p.add_argument("--reference-strength", type=float, default=1.0, help="how strongly (0 = not at all)")
    args = p.parse_args(argv)
    try:
        model, cfg, _ = load_model(args.checkpoint, args.device)
        recovery = recovery_of(cfg, args.recovery)
        reference = Reference.of_file(args.reference) if args.reference else None
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = inputs(args.inputs)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in files:
        try:
            L = read_L(f)
        except Exception as e:  # noqa: BLE001 - reported per file; the rest go on
            print(f"skipped {f}: cannot read it as an image ({type(e).__name__}: {e})", file=sys.stderr)
            failed += 1
            continue
        rgb = colorize_L(model, L, cfg["size"] or 224, cfg["head"], recovery, reference, args.reference_strength)
        Image.fromarray(rgb).save(out / f"{f.stem}.png")
        print(f"{f} -> {out / (f.stem + '.png')} ({rgb.shape[1]} x {rgb.shape[0]})")
    if failed == len(files):
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
