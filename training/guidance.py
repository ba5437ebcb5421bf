"""Global-histogram guidance, after CU-net (Wang, Chen and Tian 2022, Sec. 4.1 and Table 10): steer a
colorization towards the colours of a reference photo, for every registered model.

The reference's colours are its (a, b) histogram over the 313 categories (exact, `kernels.encode_bins`) and
the values themselves. A classifier's predicted distribution p(q) is reweighted to p(q) h(q)^strength before
colour recovery (h smoothed so that no category is ruled out); a regressor's (a, b) are histogram-matched to
the reference's, channel by channel (quantile mapping), and blended with weight min(strength, 1).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import kernels
from kernels.gamut import Q
from pipeline.storage.files import read_file
from training.loss import recover_ab

SMOOTH = 0.01  # of the reference histogram spread uniformly: every category keeps a share
MAX_SAMPLES = 1 << 16  # reference (a, b) values kept for the quantile mapping


@dataclass(frozen=True)
class Reference:
    hist: np.ndarray  # float64 (313,), sums to 1
    a: np.ndarray  # float32, sorted
    b: np.ndarray

    @classmethod
    def of_rgb(cls, rgb: np.ndarray) -> "Reference":
        """The reference of a uint8 (H, W, 3) RGB image."""
        rgb = np.ascontiguousarray(rgb)
        hist = np.bincount(kernels.encode_bins(rgb).ravel(), minlength=Q).astype(np.float64)
        ab = kernels.rgb_to_lab(rgb)[..., 1:].reshape(-1, 2)
        if len(ab) > MAX_SAMPLES:
            ab = ab[np.random.default_rng(0).choice(len(ab), MAX_SAMPLES, replace=False)]
        return cls(hist / hist.sum(), np.sort(ab[:, 0]), np.sort(ab[:, 1]))

    @classmethod
    def of_file(cls, path: str | Path, max_side: int = 512) -> "Reference":
        """The reference of a photo (any format Pillow reads), downscaled to at most max_side first."""
        return cls.of_bytes(read_file(Path(path)), max_side)

    @classmethod
    def of_bytes(cls, data: bytes, max_side: int = 512) -> "Reference":
        from PIL import Image

        from pipeline.decode import pil_decode

        img = Image.fromarray(pil_decode(data))
        img.thumbnail((max_side, max_side))
        return cls.of_rgb(np.asarray(img))


def guided_ab(out: torch.Tensor, head: str, mode: str, refs: list[Reference] | None, strength: float = 1.0):
    """(a, b) (B, 2, h, w) from the colour output `out` of a model, each image guided by its reference."""
    if not refs or strength <= 0:
        return recover_ab(out, head, mode)
    if head in ("classify", "soft"):
        hist = np.stack([(1 - SMOOTH) * r.hist + SMOOTH / Q for r in refs])  # (B, 313)
        prior = torch.from_numpy(np.log(hist)).float().to(out.device)[:, :, None, None]
        return recover_ab(torch.log_softmax(out.float(), dim=1) + strength * prior, head, mode)
    ab = recover_ab(out, head, mode)
    matched = torch.stack([_match(ab[k], ref) for k, ref in enumerate(refs)])
    w = min(strength, 1.0)
    return (1 - w) * ab + w * matched


def _match(ab: torch.Tensor, ref: Reference) -> torch.Tensor:
    """(2, h, w): each channel's values replaced by the reference's value of the same quantile."""
    out = torch.empty_like(ab)
    for c, target in enumerate((ref.a, ref.b)):
        values = ab[c].flatten()
        ranks = torch.argsort(torch.argsort(values)).float() / max(1, values.numel() - 1)  # quantiles in [0, 1]
        table = torch.from_numpy(target).to(ab.device)
        pos = (ranks * (len(target) - 1)).round().long()
        out[c] = table[pos].reshape(ab.shape[1:])
    return out
