"""Colorize photos: `python -m training.colorize --checkpoint C INPUT... --out DIR [--reference PHOTO]`.

INPUTs are files or folders (searched recursively), any size, mode or format Pillow reads. Each image is
converted to L (colour inputs too), the network runs on L resized to its training size, in batches on the
device, and the predicted (a, b) (Eq. 15-16) is upsampled to the input's full resolution (Eq. 17) and joined
with the original full-resolution L there. Outputs keep each photo's path below the folder given
(DIR/<folder>/<path>.png; a file given alone: DIR/<name>.png), so none overwrites another. With `--reference
PHOTO` the colours are steered towards the reference's (`training.guidance`, seed 001's global histogram;
`--reference-strength`, default 1). An unreadable file is reported and skipped; the others are still
colorized. Exit code 0 if all succeeded, 1 if some failed, 2 on bad arguments or when nothing was readable.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from training.loss import upsample_ab

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
BATCH = 16


def inputs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(input file, output path relative to --out): a folder's files keep their path below the folder, under the
    folder's name; a name taken twice gets a number, so that no output overwrites another."""
    out, taken = [], set()
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            pairs = [(f, Path(p.resolve().name) / f.relative_to(p)) for f in files]
        else:
            pairs = [(p, Path(p.name))]
        for f, rel in pairs:
            name, k = rel.with_suffix(".png"), 1
            while name in taken:
                k += 1
                name = rel.with_name(f"{rel.stem}-{k}.png")
            taken.add(name)
            out.append((f, name))
    return out


def read_L(path: Path) -> np.ndarray:
    """L in [0, 100] (H, W) float64 of any image (EXIF orientation applied)."""
    return L_of_bytes(path.read_bytes())


def L_of_bytes(data: bytes) -> np.ndarray:
    from kernels.lab import lightness
    from pipeline.decode import pil_decode

    return lightness(pil_decode(data))


def colorize_batch(model, Ls: list[np.ndarray], size: int, head: str, recovery: str = "argmax", reference=None,
                   strength: float = 1.0) -> list[np.ndarray]:  # fmt: skip
    """uint8 RGB (H, W, 3) for each L (H, W) in [0, 100]: the network at size x size on the model's device for
    the whole batch, each (a, b) upsampled to its own H x W and joined with its full-resolution L there; guided
    by `reference` (`training.guidance.Reference`) when given."""
    return to_rgb(*predict(model, Ls, size), head, recovery, reference, strength)


@torch.no_grad()
def predict(model, Ls: list[np.ndarray], size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the model's colour output for the batch at size x size, each L as a (1, 1, H, W) tensor on its device)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    full = [torch.from_numpy(L).to(device)[None, None] for L in Ls]
    x = torch.cat([F.interpolate(t.float() / 100.0, size=(size, size), mode="area" if min(t.shape[-2:]) >= size
                                 else "bilinear") for t in full])  # fmt: skip
    return model(x)[0], full


def to_rgb(out: torch.Tensor, full: list[torch.Tensor], head: str, recovery: str, reference=None,
           strength: float = 1.0) -> list[np.ndarray]:  # fmt: skip
    """The colour recovery of `predict`'s output (guided by `reference` when given), joined with each full L."""
    from training.colour import lab_to_rgb8
    from training.guidance import guided_ab

    ab = guided_ab(out, head, recovery, [reference] * len(full) if reference is not None else None, strength)
    rgbs = []
    for k, t in enumerate(full):
        ab_k = upsample_ab(ab[k : k + 1].double(), t.shape[-2:]).permute(0, 2, 3, 1)  # (1, H, W, 2)
        rgbs.append(lab_to_rgb8(t[:, 0].double(), ab_k)[0].cpu().numpy())
    return rgbs


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
    out, failed = Path(args.out), 0
    for start in range(0, len(files), BATCH):
        batch = []
        for f, rel in files[start : start + BATCH]:
            try:
                batch.append((f, rel, read_L(f)))
            except Exception as e:  # noqa: BLE001 - reported per file; the rest go on
                print(f"skipped {f}: cannot read it as an image ({type(e).__name__}: {e})", file=sys.stderr)
                failed += 1
        if not batch:
            continue
        size = cfg["size"] or 224
        rgbs = colorize_batch(model, [L for _, _, L in batch], size, cfg["head"], recovery, reference,
                              args.reference_strength)  # fmt: skip
        for (f, rel, _), rgb in zip(batch, rgbs, strict=True):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(out / rel)
            print(f"{f} -> {out / rel} ({rgb.shape[1]} x {rgb.shape[0]})")
    if failed == len(files):
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
