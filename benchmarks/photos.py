"""Real photographs for the tests and benchmarks: the shared ImageNet sample beside the checkout when present
(or $COLORIZE_SHARED), else crops of the embedded default's photographs. Never used by the library itself.

The one module that knows where the development photos and Zhang et al.'s released figures lie: everything else
asks the functions here, so that the folder is named in one place."""

import os
from pathlib import Path

import numpy as np

from pipeline.common.cli import Refused
from pipeline.embedded import embedded_photos


def shared_dir() -> Path | None:
    """The shared material beside the checkout (or $COLORIZE_SHARED), if present."""
    env = os.environ.get("COLORIZE_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return path if path.is_dir() else None


def imagenet_sample() -> Path | None:
    """The shared 800-photo ImageNet sample, if present."""
    root = shared_dir()
    path = root / "data" / "imagenet-sample" if root else None
    return path if path and (path / "train").is_dir() else None


def _reference(name: str) -> Path | None:
    root = shared_dir()
    path = root / "reference" / name if root else None
    return path if path and path.is_file() else None


def zhang_prior() -> Path | None:
    """Zhang et al.'s ImageNet prior over the 313 bins (../shared/reference/prior_probs.npy), if present."""
    return _reference("prior_probs.npy")


def zhang_centers() -> Path | None:
    """Zhang et al.'s (a, b) centers of the 313 bins (../shared/reference/pts_in_hull.npy), if present."""
    return _reference("pts_in_hull.npy")


def center_crop(img, size: int) -> np.ndarray:
    """PIL image -> uint8 (size, size, 3): shorter side resized to size (antialiased), center crop."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def photo_batch(n: int = 64, size: int = 224, seed: int = 0) -> tuple[np.ndarray, str]:
    """A batch uint8 (n, size, size, 3) of real colour photographs, and a description of its source.

    From the shared ImageNet sample (n photos drawn with `seed`, grayscale ones skipped) when present;
    else the embedded photographs, cropped at n scales and places to give n distinct images.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    sample = imagenet_sample()
    out = []
    if sample is not None:
        files = sorted((sample / "train").glob("*/*"))
        for i in rng.permutation(len(files)):
            with Image.open(files[i]) as img:
                if img.mode in ("L", "LA", "1", "I;16", "I"):
                    continue
                out.append(center_crop(img, size))
            if len(out) == n:
                return np.stack(out), f"{n} photos of the ImageNet sample"  # its name, not where it lies
        raise Refused(f"{sample} has fewer than {n} colour photos")
    photos = [Image.open(p).convert("RGB") for _, p in embedded_photos()]
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        left, top = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        out.append(center_crop(img.crop((left, top, left + side, top + side)), size))
    return np.stack(out), f"{n} crops of {len(photos)} photographs embedded in scikit-image"
