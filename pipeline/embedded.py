"""The embedded default: the real colour photographs that ship inside scikit-image's package data (no
download), cut into an ImageNet-layout tree of JPEGs, so that the main job runs on a machine with only Python.
"""

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
