"""Photos as the commands that colorize them read them, without torch (`colorize --onnx` runs on this alone):
the inputs and where each output goes, the header check of the pixel budget, the decode and the full-resolution
L, and batches bounded in images and pixels."""

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.common.cli import Refused, make_dir, one_line
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.storage.files import read_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
BATCH = 16
TILE = 1 << 18  # pixels per tile of the full-resolution work: its float64 temporaries stay tens of MB
PROBLEMS = {"empty": "an empty file", "not_image": "not an image Pillow can read"}


class TooLarge(Refused):
    """An image with more pixels than the budget, refused from its header."""


class NotAnImage(Refused):
    """Bytes Pillow cannot decode as an image."""


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone (`pipeline.decode.probe`); TooLarge or NotAnImage for bytes that
    must not be decoded."""
    from pipeline.decode import probe

    info = probe(data, max_pixels)
    if info.kind == "bomb":
        if not info.width:  # Pillow itself refused to open it
            why = (info.reason or "").removeprefix("decompression bomb: ")
            raise TooLarge(f"too large to open: {why} (the budget: {max_pixels:,}, --max-pixels)")
        size = f"{info.width} x {info.height} = {info.width * info.height:,} pixels"
        raise TooLarge(f"{size}, more than the budget of {max_pixels:,} (--max-pixels)")
    # A JPEG the probe calls truncated is left to Pillow, which refuses a cut one itself: bytes appended to a
    # whole one (a phone's motion photo) can look like a cut scan to the probe.
    if info.reason is not None and info.kind != "truncated":
        raise NotAnImage(f"cannot read it as an image ({PROBLEMS.get(info.kind, info.reason)})")
    return info.width, info.height


def quiet_pillow() -> None:
    """Pillow warns of images above its own bomb threshold; here the budget is checked from the header
    (`check_image`), and its warning would only add lines to a one-line refusal."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def not_an_image(error: Exception) -> NotAnImage:
    """A decoder's error in words: Pillow's messages can hold the repr of a file object, which says nothing."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", one_line(error))
    return NotAnImage(f"cannot read it as an image ({type(error).__name__}: {text})")


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image's bytes (`pipeline.decode.pil_decode`), checked from its header first."""
    from pipeline.decode import pil_decode

    check_image(data, max_pixels)
    try:
        return pil_decode(data)
    except Exception as e:  # noqa: BLE001 - damaged data raises many kinds in Pillow; each is this refusal
        raise not_an_image(e) from None


def read_L(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """L in [0, 100] (H, W) float64 of any image (EXIF orientation applied)."""
    return L_of_bytes(read_file(path), max_pixels)


def L_of_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    from kernels.lab import lightness

    rgb = decode(data, max_pixels)
    L = np.empty(rgb.shape[:2])
    rows = max(1, TILE // rgb.shape[1])
    for r in range(0, len(L), rows):  # in row tiles: lightness's float64 temporaries are 7x the size of L
        L[r : r + rows] = lightness(rgb[r : r + rows])
    return L


def inputs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(input file, output path relative to --out): a folder's files keep their path below the folder, under the
    folder's name; a name taken twice gets a number, so that no output overwrites another."""
    out, taken = [], set()
    for text in paths:
        if "://" in text:
            raise Refused(f"{text}: a URL; colorize reads photos from local files and folders")
        p = Path(text)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            pairs = [(f, Path(p.resolve().name) / f.relative_to(p)) for f in files]
        elif p.exists():
            pairs = [(p, Path(p.name))]
        else:
            raise Refused(f"{p}: no such file or folder")
        for f, rel in pairs:
            name, k = rel.with_suffix(".png"), 1
            while name in taken:
                k += 1
                name = rel.with_name(f"{rel.stem}-{k}.png")
            taken.add(name)
            out.append((f, name))
    return out


def batches(files: list[tuple[Path, Path]], max_pixels: int) -> Iterator[list[tuple[Path, Path, np.ndarray]]]:
    """Batches of (file, output path, L) of at most BATCH images and max_pixels pixels (or one image); a file
    that cannot be read is reported on stderr and left out."""
    batch, pixels = [], 0
    for f, rel in files:
        try:
            data = read_file(f)
            w, h = check_image(data, max_pixels)
        except (OSError, Refused) as e:
            print(f"skipped {f}: {getattr(e, 'strerror', None) or one_line(e)}", file=sys.stderr)
            continue
        if batch and (len(batch) == BATCH or pixels + w * h > max_pixels):
            yield batch
            batch, pixels = [], 0
        try:
            batch.append((f, rel, L_of_bytes(data, max_pixels)))
            pixels += w * h
        except Refused as e:
            print(f"skipped {f}: {e}", file=sys.stderr)
    if batch:
        yield batch


def write_outputs(out_text: str, n_files: int, results: Iterator[tuple[Path, Path, np.ndarray]]) -> int:
    """Save each (input, output path below --out, RGB) of `results`, a generator that colorizes as it is read,
    after --out is checked (refused before any work); the exit code: 0 all written, 1 some, 2 none, and then no
    folder left behind."""
    from PIL import Image

    make_dir(out_text, keep=False)  # refused before any work, and never taken for a folder named "s3:"
    new = [d for d in (Path(out_text), *Path(out_text).parents) if not d.exists()]  # the folders make_dir creates
    out, written = make_dir(out_text), 0
    try:
        for f, rel, rgb in results:
            try:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(out / rel)
            except OSError as e:
                print(f"skipped {f}: cannot write {out / rel}: {one_line(e)}", file=sys.stderr)
                continue
            written += 1
            print(f"{f} -> {out / rel} ({rgb.shape[1]} x {rgb.shape[0]})")
    finally:
        if not written:  # nothing was colorized (or the model refused to run): leave no folder behind
            for d in new:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
    return 2 if not written else (1 if written < n_files else 0)
