"""Where real photographs come from: the shared ImageNet sample when present, else the embedded default.

The embedded default is the set of real colour photographs that ship inside scikit-image's package data
(no download), so the project's main job runs on a machine that has nothing but Python.
"""

import os
from pathlib import Path

import numpy as np

# Colour photographs in scikit-image's data directory, by class name; all ship with the wheel.
EMBEDDED_PHOTOS = {
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
    "galaxy": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "microscopy": "ihc.png",
}


def embedded_dir() -> Path:
    """scikit-image's data directory, where the embedded photographs live."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def embedded_photos() -> list[tuple[str, Path]]:
    """(class name, path) of every embedded colour photograph."""
    root = embedded_dir()
    out = []
    for cls, names in EMBEDDED_PHOTOS.items():
        for name in (names,) if isinstance(names, str) else names:
            out.append((cls, root / name))
    return out


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
                return np.stack(out), f"{n} photos of {sample}"
        raise ValueError(f"{sample} has fewer than {n} colour photos")
    photos = [Image.open(p).convert("RGB") for _, p in embedded_photos()]
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        left, top = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        out.append(center_crop(img.crop((left, top, left + side, top + side)), size))
    return np.stack(out), f"{n} crops of {len(photos)} photographs embedded in scikit-image"


EMBEDDED_SPLITS = {"train": 10, "val": 2}  # crops per photograph in each split


def build_embedded_dataset(root: Path, seed: int = 0) -> Path:
    """Write the embedded default as an ImageNet-layout tree of real JPEGs: root/<split>/<class>/*.JPEG.

    Each embedded photograph gives `EMBEDDED_SPLITS[split]` crops of random size (35-100 % of its
    shorter side) and place, saved at JPEG quality 90; train and val crops are drawn apart. Idempotent:
    an existing complete tree is left as it is.
    """
    from PIL import Image

    root = Path(root)
    stamp = root / ".complete"
    if stamp.is_file():
        return root
    rng = np.random.default_rng(seed)
    for cls, path in embedded_photos():
        img = Image.open(path).convert("RGB")
        w, h = img.size
        for split, n in EMBEDDED_SPLITS.items():
            out = root / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                side = int(min(w, h) * rng.uniform(0.35, 1.0))
                left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                crop = img.crop((left, top, left + side, top + side))
                crop.save(out / f"{path.stem}_{split}_{k:02d}.JPEG", quality=90)
    stamp.write_text("complete\n")
    return root
