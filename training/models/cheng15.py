"""`cheng15`: *Deep Colorization* of Cheng, Yang and Sheng (ICCV 2015), as Beniwal, Neelisetty and Pakanati
describe it in *Image Colorization using Deep Learning: A Review*: a per-pixel network on low-, mid- and
high-level descriptors of the gray image, trained by least squares on (a, b), its colours refined by a joint
bilateral filter guided by the gray image.

The descriptors are computed from L inside the model (no learned weights), so the model trains on any store
and colorizes any photo. Readings where the review leaves a choice open:
- Low level: the 7 x 7 patch of L around the pixel (49 values, edges reflected).
- Mid level: DAISY (Tola, Lepetit and Fua 2010): the rectified derivatives of L in 8 directions, smoothed by
  Gaussians that widen with the ring; sampled at the pixel and at 8 points on each of 2 rings (radii 3 and 6
  pixels), each 8-bin histogram scaled to unit length: 8 x 17 = 136 values.
- High level: no scene parser is at hand, so the "semantic histogram" is one of visual words: the DAISY
  descriptors are clustered by k-means (16 words, mini-batch k-means on the training images' pixels, frozen
  when the model evaluates), and each pixel gets the histogram of words over the whole image and over its
  neighbourhood (a window of a quarter of the image's side): 32 values.
- The review's adaptive clustering trains one network per cluster of reference images; here one network
  takes the image's histogram of words as input, so that it can tell the clusters apart itself.
- Network: the 217 values, standardised by running statistics, then 3 hidden layers of half as many neurons
  (the review: half the input layer; `width` multiplies them) with ReLU, and 2 linear outputs, ab / 110, as
  1 x 1 convolutions. Training takes the descriptors at sampled pixels, as the review says: one per 4 x 4
  block (its third pixel in each direction), where the stored targets are, by least squares (L2; `l1`
  offered). Evaluation and colorize take every pixel.
- Refinement: a joint bilateral filter (Petschnigg et al. 2004) of the predicted (a, b), 7 x 7 window,
  spatial sigma 3 pixels, range sigma 0.1 of L's range, applied when the model evaluates or colorizes.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.models.registry import ModelSpec, register

ORIENTATIONS, RING_POINTS, RINGS = 8, 8, (3, 6)
WORDS = 16
TRAIN_STRIDE = 4
N_FEATURES = 49 + ORIENTATIONS * (1 + RING_POINTS * len(RINGS)) + 2 * WORDS


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel smoothed by a separable Gaussian, edges replicated."""
    r = max(1, math.ceil(2.5 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma * sigma))
    k = (k / k.sum()).repeat(x.shape[1], 1).view(x.shape[1], 1, 1, -1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=x.shape[1])


def _sample(x: torch.Tensor, dy: int, dx: int, pad: int, stride: int) -> torch.Tensor:
    """x (padded by `pad`) at the grid points (y + dy, x + dx), y and x every `stride` pixels from stride // 2."""
    h, w = x.shape[-2] - 2 * pad, x.shape[-1] - 2 * pad
    o = stride // 2
    return x[..., pad + dy + o : pad + dy + h : stride, pad + dx + o : pad + dx + w : stride]


def daisy(L: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 136, H / stride, W / stride): DAISY's histograms at the grid's pixels and on their
    rings, each of unit length."""
    gy, gx = torch.gradient(L, dim=(-2, -1))
    angles = torch.arange(ORIENTATIONS, dtype=L.dtype, device=L.device) * (2 * math.pi / ORIENTATIONS)
    maps = (gx * angles.cos().view(1, -1, 1, 1) + gy * angles.sin().view(1, -1, 1, 1)).clamp_min(0)
    pad = RINGS[-1]
    out = []
    for k, sigma in enumerate((RINGS[0] / 2, *(r / 2 for r in RINGS))):
        smooth = _gauss_blur(maps, sigma)
        smooth = smooth / smooth.square().sum(1, keepdim=True).sqrt().clamp_min(1e-6)  # each histogram of unit length
        smooth = F.pad(smooth, (pad,) * 4, mode="replicate")
        r = RINGS[k - 1] if k else 0
        for j in range(RING_POINTS if k else 1):
            t = 2 * math.pi * j / RING_POINTS
            out.append(_sample(smooth, round(r * math.sin(t)), round(r * math.cos(t)), pad, stride))
    return torch.cat(out, dim=1)


def joint_bilateral(ab: torch.Tensor, L: torch.Tensor, radius: int = 3, sigma_s: float = 3.0,
                    sigma_r: float = 0.1) -> torch.Tensor:  # fmt: skip
    """(a, b) (B, 2, H, W) smoothed where L is alike, stopped at L's edges (Petschnigg et al. 2004)."""
    k = 2 * radius + 1
    B, _, H, W = ab.shape
    patches_L = F.unfold(F.pad(L, (radius,) * 4, mode="replicate"), k).view(B, k * k, H, W)
    patches_ab = F.unfold(F.pad(ab, (radius,) * 4, mode="replicate"), k).view(B, 2, k * k, H, W)
    d = torch.arange(-radius, radius + 1, dtype=ab.dtype, device=ab.device)
    spatial = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma_s**2)).view(1, k * k, 1, 1)
    weight = spatial * torch.exp(-((patches_L - L) ** 2) / (2 * sigma_r**2))
    return (patches_ab * weight[:, None]).sum(2) / weight.sum(1, keepdim=True)


class Cheng15(nn.Module):
    def __init__(self, width: float = 1.0, refine: bool = True):
        super().__init__()
        hidden = max(8, round(N_FEATURES / 2 * width))
        self.norm = nn.BatchNorm2d(N_FEATURES, affine=False)
        layers: list[nn.Module] = []
        for k in range(3):
            layers += [nn.Conv2d(N_FEATURES if k == 0 else hidden, hidden, 1), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers, nn.Conv2d(hidden, 2, 1))
        self.refine = refine
        n_daisy = N_FEATURES - 49 - 2 * WORDS
        self.register_buffer("words", torch.zeros(WORDS, n_daisy))
        self.register_buffer("counts", torch.zeros(WORDS))

    @torch.no_grad()
    def _learn_words(self, desc: torch.Tensor) -> None:
        """One step of mini-batch k-means (Sculley 2010) on up to 4,096 pixels of the batch."""
        flat = desc.permute(0, 2, 3, 1).reshape(-1, desc.shape[1])
        flat = flat[torch.randint(len(flat), (min(4096, len(flat)),), device=flat.device)]
        if self.counts.sum() == 0:  # the first batch seeds the words
            self.words.copy_(flat[torch.randperm(len(flat), device=flat.device)[:WORDS]])
        nearest = torch.cdist(flat, self.words).argmin(1)
        n = torch.bincount(nearest, minlength=WORDS).to(flat.dtype)
        sums = torch.zeros_like(self.words).index_add_(0, nearest, flat)
        self.counts += n
        seen = n > 0
        rate = (n / self.counts.clamp_min(1))[:, None]
        self.words[seen] += (rate * (sums / n.clamp_min(1)[:, None] - self.words))[seen]

    def features(self, L: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, 217, H / stride, W / stride): patch, DAISY and histograms of words at
        every `stride`-th pixel."""
        L = L.float()
        B = L.shape[0]
        patch = F.unfold(F.pad(L, (3, 3, 3, 3), mode="reflect"), 7).view(B, 49, *L.shape[-2:])
        patch = _sample(patch, 0, 0, 0, stride)
        desc = daisy(L, stride)
        if self.training:
            self._learn_words(desc)
        # the nearest word of every pixel: argmin |x - w|^2 = argmin (|w|^2 - 2 x.w), one matrix product
        score = torch.einsum("bchw,kc->bkhw", desc, self.words) * -2 + self.words.square().sum(1).view(1, -1, 1, 1)
        onehot = F.one_hot(score.argmin(1), WORDS).permute(0, 3, 1, 2).to(L.dtype)
        k = max(3, (min(onehot.shape[-2:]) // 4) | 1)  # a box filter of a quarter of the side, in two passes
        local = F.avg_pool2d(onehot, (k, 1), 1, (k // 2, 0), count_include_pad=False)
        local = F.avg_pool2d(local, (1, k), 1, (0, k // 2), count_include_pad=False)
        whole = onehot.mean((2, 3), keepdim=True).expand_as(onehot)
        return torch.cat([patch, desc, whole, local], dim=1)

    def forward(self, L):
        if self.training:  # the sampled pixels: one per 4 x 4 block, where the stored targets are
            return self.mlp(self.norm(self.features(L, TRAIN_STRIDE))), None  # ab / AB_SCALE at H/4
        ab = self.mlp(self.norm(self.features(L)))  # every pixel
        return (joint_bilateral(ab, L.float()) if self.refine else ab), None


register(
    ModelSpec(
        name="cheng15",
        build=lambda width, n_classes, head: Cheng15(width),
        heads=("l2", "l1"),
        recoveries=("regression",),
        optimizer="adam",  # "classical back-propagation": optimiser, rate and batch are ours
        recipe={"weight_decay": 0.0},
        stride=4,
        paper="Cheng, Yang and Sheng 2015, Deep Colorization (ICCV), as reviewed by Beniwal, Neelisetty and "
        "Pakanati, Image Colorization using Deep Learning: A Review",
    )
)
