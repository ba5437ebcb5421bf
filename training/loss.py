"""Losses (Eq. 18-20 of Wang et al.) and colour recovery (Eq. 15-17), for the three colour heads.

- `classify` (the paper): cross-entropy over the 313 categories, each pixel weighted by the balance weight
  of its true category (Eq. 19), plus the picture-category cross-entropy (Eq. 18) where a label is known.
- `soft` (Zhang et al.'s targets, Eq. 1): the target of a pixel is the Gaussian soft-encoding (sigma 5,
  the 5 nearest centers) of its category's center -- the store keeps the category, not the exact (a, b) --
  with the same rebalancing weights.
- `l1`, `l2` (regression: `cunet`, `pix2pix`, and the AFF net's regression baseline): L1 or L2 between the
  predicted (a, b) / 110 and the center of the true category / 110; a prediction finer than the targets (at
  H rather than H/4) is compared pixel by pixel with the centers upsampled bilinearly (a block mean alone
  would leave the pixels of a block free to vary, and they do).
Total: lambda_col * colour + lambda_cls * class (Eq. 20; 1 and 0.003 by default).
"""

import numpy as np
import torch
import torch.nn.functional as F

from kernels.gamut import CENTERS_F32
from kernels.zhang import SoftEncoding, soft_encode
from pipeline.common.cli import Refused

AB_SCALE = 110.0
T_DEFAULT = 0.38


def soft_target_table(neighbours: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """float32 (313, 313): row q = Zhang's soft-encoding of center q."""
    z = soft_encode(CENTERS_F32.astype(np.float64), SoftEncoding(neighbours=neighbours, sigma=sigma))
    return torch.from_numpy(z.astype(np.float32))


class Criterion(torch.nn.Module):
    def __init__(self, weights: np.ndarray, head: str, lam_col: float = 1.0, lam_cls: float = 0.003):
        super().__init__()
        self.head, self.lam_col, self.lam_cls = head, lam_col, lam_cls
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        self.register_buffer("centers", torch.from_numpy(CENTERS_F32.copy()))
        if head == "soft":
            self.register_buffer("soft", soft_target_table())

    def colour(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """logits (B, 313 | 2, h, w) float, q (B, h, w) long -> scalar."""
        logits = logits.float()
        if self.head in ("l1", "l2"):
            target = self.centers[q].permute(0, 3, 1, 2) / AB_SCALE  # (B, 2, h, w)
            if target.shape[-2:] != logits.shape[-2:]:  # a prediction at H: every pixel against smooth targets
                target = F.interpolate(target, size=logits.shape[-2:], mode="bilinear", align_corners=False)
            diff = logits - target
            return diff.abs().mean() if self.head == "l1" else diff.square().mean()
        w = self.weights[q]  # (B, h, w)
        if self.head == "classify":
            return (F.cross_entropy(logits, q, reduction="none") * w).mean()  # Eq. 19
        target = self.soft[q].permute(0, 3, 1, 2)  # (B, 313, h, w)
        return (-(target * F.log_softmax(logits, dim=1)).sum(1) * w).mean()

    def forward(self, out: tuple, q: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        logits_col, logits_cls = out
        col = self.colour(logits_col, q)
        total = self.lam_col * col
        cls = torch.zeros((), device=col.device)
        if logits_cls is not None:  # Eq. 18 over the images with a label; unknown ones (-1) add nothing
            known = (label >= 0).float()  # a mask, not a selection: no step waits to learn how many there are
            each = F.cross_entropy(logits_cls.float(), label.clamp(min=0).long(), reduction="none")
            cls = (each * known).sum() / known.sum().clamp(min=1.0)
            total = total + self.lam_cls * cls
        return {"loss": total, "colour": col.detach(), "class": cls.detach()}


def recover_ab(logits: torch.Tensor, head: str, mode: str = "argmax", T: float = T_DEFAULT) -> torch.Tensor:
    """(a, b) (B, 2, h, w) float32 from the colour logits (Eq. 15-16).

    `argmax`: q* = argmax(Z / T) = argmax(Z) (dividing by T > 0 keeps the order), ab = M^-1(q*);
    `annealed`: Zhang's annealed mean, sum_q softmax(log Z / T)_q * center_q.
    """
    logits = logits.float()
    if head in ("l1", "l2"):  # regression: the prediction is (a, b) / AB_SCALE
        return logits * AB_SCALE
    centers = torch.from_numpy(CENTERS_F32.copy()).to(logits.device)  # (313, 2)
    if mode == "argmax":
        return centers[logits.argmax(1)].permute(0, 3, 1, 2)
    if mode == "annealed":
        p = F.softmax(F.log_softmax(logits, dim=1) / T, dim=1)  # (B, 313, h, w)
        return torch.einsum("bqhw,qc->bchw", p, centers)
    raise Refused(f"unknown recovery mode {mode!r}: 'argmax' or 'annealed' (or 'regression' for regressors)")


def upsample_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eq. 17: the (a, b) map brought to the resolution of L (bilinear)."""
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
