"""Evaluation maths on the device, in float64, batch by batch: Lab -> 8-bit RGB as scikit-image's `lab2rgb`,
PSNR and SSIM as `skimage.metrics` compute them (tests compare), colourfulness (Hasler and Suesstrunk),
Zhang et al.'s raw accuracy (AuC) and colour overflow. Images are (B, H, W, 3) tensors."""

import torch
import torch.nn.functional as F

from kernels.lab import WHITE_D65, XYZ_FROM_RGB

AUC_MAX = 150  # thresholds 0..150 on the (a, b) error
# Colour overflow: a truth pixel of chroma C*ab below NEUTRAL is near-neutral (white, gray, black, a pale tint);
# the prediction overflows onto it when its chroma exceeds the truth's by more than OVERFLOW, about nine times
# the usual just-noticeable difference of 2.3 units of Delta E*ab: a colour no viewer misses on a gray wall.
NEUTRAL, OVERFLOW = 10.0, 20.0


def lab_to_rgb8(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) of L (B, H, W) in [0, 100] and ab (B, H, W, 2): CIE Lab (D65) -> sRGB, out-of-gamut
    colours clipped, as scikit-image's lab2rgb followed by rounding."""
    L, ab = L.double(), ab.double()
    y = (L + 16.0) / 116.0
    fxyz = torch.stack([ab[..., 0] / 500.0 + y, y, (y - ab[..., 1] / 200.0).clamp(min=0.0)], dim=-1)
    xyz = torch.where(fxyz > 0.2068966, fxyz**3, (fxyz - 16.0 / 116.0) / 7.787)
    xyz = xyz * torch.tensor(WHITE_D65, dtype=torch.float64, device=L.device)
    rgb_from_xyz = torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64, device=L.device))
    lin = xyz @ rgb_from_xyz.T
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp(min=0.0) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def gray_rgb8(L: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) of L (B, H, W) in [0, 100] with a = b = 0: the gray input as RGB."""
    return lab_to_rgb8(L, torch.zeros((*L.shape, 2), dtype=torch.float64, device=L.device))


def mae(truth: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(B,): mean absolute error of 8-bit RGB images, in levels of 255 (the metric Nazeri et al. report)."""
    return (truth.double() - test.double()).abs().flatten(1).mean(1)


def psnr(truth: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(B,): peak signal-to-noise ratio of 8-bit images, data range 255."""
    mse = (truth.double() - test.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim(truth: torch.Tensor, test: torch.Tensor, win: int = 7) -> torch.Tensor:
    """(B,): mean structural similarity over the channels, as skimage's `structural_similarity` with
    channel_axis=-1, data_range=255 and its defaults (a 7 x 7 uniform window, sample covariances, the window's
    half-width cropped from every side)."""
    x = truth.double().permute(0, 3, 1, 2)  # (B, 3, H, W)
    y = test.double().permute(0, 3, 1, 2)
    c = x.shape[1]
    kernel = torch.full((c, 1, win, win), 1.0 / win**2, dtype=torch.float64, device=x.device)

    def mean(t):  # the border it gets wrong is cropped below
        return F.conv2d(F.pad(t, (win // 2,) * 4, mode="replicate"), kernel, groups=c)

    ux, uy = mean(x), mean(y)
    cov = win**2 / (win**2 - 1)
    vx, vy, vxy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy), cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    p = win // 2
    return s[..., p:-p, p:-p].flatten(1).mean(1)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """(B,): Hasler and Suesstrunk (2003): sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)."""
    r, g, b = (rgb[..., k].double().flatten(1) for k in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    std = torch.hypot(rg.std(1, unbiased=False), yb.std(1, unbiased=False))
    return std + 0.3 * torch.hypot(rg.mean(1), yb.mean(1))


def cf(rgb: torch.Tensor) -> torch.Tensor:
    """(B,): colourfulness as the colorization literature computes it (the CF of CT2's, ColorFormer's and
    DDColor's code): Hasler and Suesstrunk's formula on the absolute opponent channels |R - G| and
    |(R + G) / 2 - B|, population standard deviations."""
    r, g, b = (rgb[..., k].double().flatten(1) for k in range(3))
    rg, yb = (r - g).abs(), (0.5 * (r + g) - b).abs()
    std = torch.hypot(rg.std(1, unbiased=False), yb.std(1, unbiased=False))
    return std + 0.3 * torch.hypot(rg.mean(1), yb.mean(1))


def auc(ab: torch.Tensor, ab_true: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B,): the area under the share of pixels whose (a, b) error is within t, t = 0..150, normalised to
    [0, 1] (Zhang et al. 2016; Beniwal et al.'s review); `weights` (B, H, W) for the rebalanced version."""
    err = (ab.double() - ab_true.double()).square().sum(-1).sqrt().flatten(1)  # (B, N)
    w = torch.ones_like(err) if weights is None else weights.double().flatten(1)
    t = torch.arange(AUC_MAX + 1, dtype=torch.float64, device=err.device)
    within = (err[:, None, :] <= t[None, :, None]).double()  # (B, 151, N)
    return ((within * w[:, None, :]).sum(-1) / w.sum(-1, keepdim=True)).mean(1)


def overflow_counts(ab: torch.Tensor, ab_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) each: the truth's near-neutral pixels the prediction paints with a colour (chroma above the truth's by
    more than OVERFLOW), and the truth's near-neutral pixels (chroma below NEUTRAL). Their ratio, pooled over
    images, is the colour overflow that Wang et al. say the AFF module prevents."""
    c_true, c_pred = ab_true.double().norm(dim=-1), ab.double().norm(dim=-1)
    neutral = c_true < NEUTRAL
    painted = neutral & (c_pred - c_true > OVERFLOW)
    return painted.flatten(1).sum(1).double(), neutral.flatten(1).sum(1).double()
