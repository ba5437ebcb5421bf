"""The AFF classification U-Net of Wang et al. 2022 (Sec. 3.1, 3.3-3.6; Fig. 2, 4, 5), with its ablations.

Reading of the text, where it leaves a choice open (docs/training.md):
- Encoder: six residual blocks (Fig. 4: a 1x1 convolution path plus a path of two 3x3 convolutions,
  summed; BatchNorm and ReLU as in ResNet). Each doubles the channels; the first keeps the resolution
  (1 -> 64 channels at h x w) and the other five halve it, so En1..En5 are at h, h/2, h/4, h/8, h/16 --
  the scales Eq. 12-14 need -- and the sixth block gives the global features x^g, 2048 x h/32 x w/32.
- Classification subnetwork (Sec. 3.6): 3x3 convolution + BN + ReLU, 1x1 convolution to 1000, global
  average pooling -> picture-category logits.
- AFF_k (Eq. 12-14, Fig. 5): En1..En5 resized to the scale of En_{k+2} (average pooling down, bilinear up),
  concatenated, then a 1x1 and a 3x3 convolution to the channels of that scale.
- Decoder: three residual blocks; before each, the input is upsampled x2 and concatenated with the AFF
  output of the same size (AFF3 at h/16, AFF2 at h/8, AFF1 at h/4); a 1x1 convolution gives 313 logits at
  h/4 x w/4 (56 x 56 for 224).
Variants (Table 3): `unet` (skips are En5, En4, En3 themselves; no classifier), `unet+cls`, `unet+aff`,
`full`. `width` multiplies every channel count (1.0 = the paper's), for CPU-sized runs.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernels.gamut import Q
from training.models.registry import N_CLASSES, ModelSpec, register

VARIANTS = ("unet", "unet+cls", "unet+aff", "full")
HEADS = ("classify", "soft", "l1")  # 313-way (Eq. 19), Zhang's soft targets (Eq. 1), L1 on ab (regression)


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "full"
    head: str = "classify"
    width: float = 1.0
    n_classes: int = N_CLASSES

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose from {', '.join(HEADS)}")

    @property
    def aff(self) -> bool:
        return self.variant in ("unet+aff", "full")

    @property
    def cls(self) -> bool:
        return self.variant in ("unet+cls", "full")

    def channels(self) -> list[int]:
        """Channels of En1..En6: 64 .. 2048 times width (at least 4)."""
        return [max(4, round(64 * 2**k * self.width)) for k in range(6)]


def conv_bn(in_chs: int, out_chs: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_chs, out_chs, k, stride, k // 2, bias=False), nn.BatchNorm2d(out_chs)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Fig. 4: out = ReLU(1x1(x) + 3x3(3x3(x))); stride 2 halves the resolution in both paths."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.short = conv_bn(in_chs, out_chs, 1, stride, relu=False)
        self.body = nn.Sequential(conv_bn(in_chs, out_chs, 3, stride), conv_bn(out_chs, out_chs, 3, relu=False))

    def forward(self, x):
        return F.relu(self.short(x) + self.body(x))


class AFF(nn.Module):
    """Asymmetric feature fusion (Eq. 12-14): all encoder scales resized to one, concatenated, 1x1 + 3x3."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.fuse = nn.Sequential(conv_bn(in_chs, out_chs, 1), conv_bn(out_chs, out_chs, 3))

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        resized = []
        for f in feats:
            if f.shape[-2:] == size:
                resized.append(f)
            elif f.shape[-2] > size[0]:  # Subs_k
                resized.append(F.adaptive_avg_pool2d(f, size))
            else:  # Ups_k
                resized.append(F.interpolate(f, size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(resized, dim=1))


class ColorNet(nn.Module):
    """L (B, 1, H, W) in [0, 1] -> (colour logits (B, 313 | 2, H/4, W/4), class logits (B, 1000) or None)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels()  # En1..En6
        self.encoder = nn.ModuleList(
            [ResidualBlock(1, c[0], 1)] + [ResidualBlock(c[k - 1], c[k], 2) for k in range(1, 6)]
        )
        if cfg.cls:
            self.classifier = nn.Sequential(
                conv_bn(c[5], c[4], 3), nn.Conv2d(c[4], cfg.n_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
        if cfg.aff:
            self.aff = nn.ModuleList([AFF(sum(c[:5]), c[k]) for k in (2, 3, 4)])  # AFF1..3 at En3..En5 scales
        # decoder block k: upsampled input + skip of scale En5, En4, En3 -> channels of that scale
        self.decoder = nn.ModuleList(
            [ResidualBlock(c[5] + c[4], c[4]), ResidualBlock(c[4] + c[3], c[3]), ResidualBlock(c[3] + c[2], c[2])]
        )
        self.head = nn.Conv2d(c[2], 2 if cfg.head == "l1" else Q, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier normal initialisation (Sec. 4.1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = []
        x = L
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        en, g = feats[:5], feats[5]  # En1..En5, x^g
        logits_cls = self.classifier(g) if self.cfg.cls else None
        if self.cfg.aff:
            skips = [aff(en, en[k].shape[-2:]) for aff, k in zip(self.aff, (2, 3, 4), strict=True)]
        else:
            skips = [en[2], en[3], en[4]]
        x = g
        for block, skip in zip(self.decoder, reversed(skips), strict=True):  # scales h/16, h/8, h/4
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x), logits_cls


for _variant in VARIANTS:
    register(
        ModelSpec(
            name=_variant,
            build=lambda width, n_classes, head, v=_variant: ColorNet(ModelConfig(v, head, width, n_classes)),
            heads=HEADS,
            recoveries=("argmax", "annealed"),
            optimizer="sgd",
            paper="Wang et al. 2022, Table 3",
        )
    )
