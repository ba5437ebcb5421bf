"""PNG figures drawn with Pillow (no plotting library needed): loss curves and image grids."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def loss_curve(path: Path, series: dict[str, list[tuple[int, float]]], title: str = "training loss") -> None:
    """Line plot of (step, value) series on a log y axis."""
    chart(series, title, "step").save(path)


def chart(
    series: dict[str, list[tuple[float, float]]], title: str, x_label: str, log_x: bool = False, log_y: bool = True
) -> Image.Image:
    """Line plot of (x, y) series, y on a log axis (positive values only) or a linear one (where 0 is a measured
    value, as a share of pixels is), x optionally on a log axis."""
    w, h, pad = 720, 400, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)

    def shown(x, y) -> bool:  # a log axis has no place for 0 or below
        return (y > 0 or not log_y) and (x > 0 or not log_x)

    pts = [(x, y) for s in series.values() for x, y in s if shown(x, y)]
    if not pts:
        return img
    fx = np.log10 if log_x else (lambda v: v)
    fy = np.log10 if log_y else (lambda v: v)
    lo, hi = fy(min(y for _, y in pts)), fy(max(y for _, y in pts))
    hi = hi if hi > lo else lo + 1
    x0, x1 = fx(min(x for x, _ in pts)), fx(max(x for x, _ in pts))
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x) -> float:
        return pad + (fx(x) - x0) / (x1 - x0) * (w - 2 * pad)

    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    d.text((pad, 15), title, fill="black")
    xs = sorted({x for x, _ in pts})
    for x in xs if len(xs) <= 8 else (xs[0], xs[-1]):  # every budget of a short study, else the ends
        label = f"{x:g}" if x != xs[0] else f"{x_label} {x:g}"
        d.text((max(pad, min(px(x) - 14, w - pad - 30)), h - pad + 8), label, fill="black")
    d.text((5, pad), f"{10**hi if log_y else hi:.3g}", fill="black")
    d.text((5, h - pad - 10), f"{10**lo if log_y else lo:.3g}", fill="black")
    for i, (name, s) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        xy = [(px(x), h - pad - (fy(y) - lo) / (hi - lo) * (h - 2 * pad)) for x, y in s if shown(x, y)]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        for x, y in xy if len(xy) <= 20 else ():  # the measured points of a short series
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        d.text((w - pad - 220, pad + 8 + 14 * i), name, fill=colour)
    return img


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
