"""A prior over the 313 categories drawn on the ab plane, beside another (the store's and Zhang et al.'s)."""

from pathlib import Path

import numpy as np

from kernels.gamut import CENTERS


def prior_png(path: Path, panels: list[tuple[str, np.ndarray]], cell: int = 12) -> None:
    """Priors on the ab plane (log10, one square per category), side by side, written as a PNG."""
    from PIL import Image, ImageDraw

    a_min, b_min = int(CENTERS[:, 0].min()), int(CENTERS[:, 1].min())
    na = (int(CENTERS[:, 0].max()) - a_min) // 10 + 1
    nb = (int(CENTERS[:, 1].max()) - b_min) // 10 + 1
    ramp = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    pad, title = 30, 18
    img = Image.new("RGB", (len(panels) * (nb * cell + pad) + pad, na * cell + pad + title), "white")
    draw = ImageDraw.Draw(img)
    for p, (name, prior) in enumerate(panels):
        x0 = pad + p * (nb * cell + pad)
        draw.text((x0, 4), name, fill="black")
        logp = np.log10(np.maximum(prior, 1e-12))
        lo, hi = -6.0, max(-1.0, float(logp.max()))
        for q, (a, b) in enumerate(CENTERS):
            row, col = (int(a) - a_min) // 10, (int(b) - b_min) // 10
            if prior[q] <= 0:
                colour = (220, 220, 220)
            else:
                t = np.clip((logp[q] - lo) / (hi - lo), 0, 1) * (len(ramp) - 1)
                i = min(int(t), len(ramp) - 2)
                colour = tuple(int(v) for v in ramp[i] + (ramp[i + 1] - ramp[i]) * (t - i))
            y = title + row * cell
            x = x0 + col * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
        draw.text((x0, title + na * cell + 4), "b ->   (rows: a, top = -90); log10 p, grey = 0", fill="black")
    img.save(path)
