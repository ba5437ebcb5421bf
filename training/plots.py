"""PNG figures drawn with Pillow (no plotting library needed): loss curves and image grids."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def loss_curve(path: Path, series: dict[str, list[tuple[int, float]]], title: str = "training loss") -> None:
    """Line plot of (step, value) series on a log y axis."""
    w, h, pad = 720, 400, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [v for s in series.values() for _, v in s if v > 0]
    steps = [k for s in series.values() for k, _ in s]
    if not pts or not steps:
        img.save(path)
        return
    lo, hi = np.log10(min(pts)), np.log10(max(pts))
    hi = hi if hi > lo else lo + 1
    s0, s1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    d.text((pad, 15), title, fill="black")
    d.text((pad, h - pad + 8), f"step {s0}", fill="black")
    d.text((w - pad - 60, h - pad + 8), f"step {s1}", fill="black")
    d.text((5, pad), f"{10**hi:.3g}", fill="black")
    d.text((5, h - pad - 10), f"{10**lo:.3g}", fill="black")
    for i, (name, s) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        xy = [
            (pad + (k - s0) / (s1 - s0) * (w - 2 * pad), h - pad - (np.log10(v) - lo) / (hi - lo) * (h - 2 * pad))
            for k, v in s
            if v > 0
        ]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        d.text((w - pad - 150, pad + 8 + 14 * i), name, fill=colour)
    img.save(path)


def grid(path: Path, rows: list[list[np.ndarray]], header: list[str]) -> None:
    """Rows of equally sized uint8 RGB images (H, W, 3) with a column header."""
    h, w = rows[0][0].shape[:2]
    top = 16
    img = Image.new("RGB", (w * len(rows[0]), top + h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    for j, name in enumerate(header):
        d.text((j * w + 4, 2), name, fill="black")
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            img.paste(Image.fromarray(tile), (j * w, top + i * h))
    img.save(path)
