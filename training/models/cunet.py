"""`cunet`: CU-net of Wang, Chen and Tian 2022, *Image Colorization Algorithm Based on Deep Learning* (Sec. 3.2,
Tables 5-8): a U-Net with three down- and three up-samplings, dilated convolutions instead of max pooling, and
BN before sigmoid activations.

Readings where the text leaves a choice open:
- conv1-4: two 3 x 3 conv -> BN -> sigmoid pairs each (64, 128, 256, 512 channels). Tables 5 gives stride 1
  everywhere, yet the text says three down-samplings with no max pooling: the first convolution of conv2,
  conv3 and conv4 has stride 2 (H/2, H/4, H/8), so that the skips below meet maps of their own size.
- conv5-6: two dilated (rate 2, padding 2) pairs each, 512 channels; conv7: three pairs, 512.
- conv8-10: a 4 x 4 transposed convolution (stride 2, padding 1) halving the channels (256, 128, 64), then
  one 3 x 3 pair. The text joins conv3 and conv2 to conv8 and conv9 (Table 8 lists conv1-conv10 and
  "conv3-conv7" too, which no resolution matches): conv3's and conv2's outputs are concatenated with the
  upsampled maps of conv8 and conv9 before their 3 x 3 pair.
- A 1 x 1 convolution and tanh give ab / 128 at H x W (Sec. 3.3); the loss is not named: L2 on ab, the
  Euclidean loss of the regressors the paper compares with. The store keeps categories, so the target of
  each 4 x 4 block is its category's center, and the loss compares every pixel with the centers upsampled
  bilinearly (a loss on block means alone left the pixels of a block free: checkerboard colours, SSIM 0.45).
- The paper guides colour with a reference's global histogram (Table 10, "+Global histogram"):
  `training.guidance`, for every registered model.
"""

import torch
from torch import nn

from training.loss import AB_SCALE
from training.models.registry import ModelSpec, register, xavier_init


def _pairs(in_chs: int, out_chs: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(n):
        s = stride if k == 0 else 1
        conv = nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, s, dilation, dilation, bias=False)
        layers += [conv, nn.BatchNorm2d(out_chs), nn.Sigmoid()]
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """4 x 4 transposed convolution (x2), the skip concatenated, then one 3 x 3 conv -> BN -> sigmoid pair."""

    def __init__(self, in_chs: int, out_chs: int, skip_chs: int = 0):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(in_chs, out_chs, 4, 2, 1, bias=False), nn.BatchNorm2d(out_chs))
        self.conv = _pairs(out_chs + skip_chs, out_chs, 1)

    def forward(self, x, skip=None):
        x = torch.sigmoid(self.up(x))
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class CUNet(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 128, 256, 512)]
        self.conv1 = _pairs(1, c[0], 2)  # H
        self.conv2 = _pairs(c[0], c[1], 2, stride=2)  # H/2
        self.conv3 = _pairs(c[1], c[2], 2, stride=2)  # H/4
        self.conv4 = _pairs(c[2], c[3], 2, stride=2)  # H/8
        self.conv5_7 = nn.Sequential(_pairs(c[3], c[3], 2, dilation=2), _pairs(c[3], c[3], 2, dilation=2),
                                     _pairs(c[3], c[3], 3))  # fmt: skip
        self.conv8 = _Up(c[3], c[2], skip_chs=c[2])  # H/4, + conv3
        self.conv9 = _Up(c[2], c[1], skip_chs=c[1])  # H/2, + conv2
        self.conv10 = _Up(c[1], c[0])  # H
        self.head = nn.Conv2d(c[0], 2, 1)
        xavier_init(self)

    def forward(self, L):
        x1 = self.conv1(L)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x = self.conv5_7(self.conv4(x3))
        x = self.conv10(self.conv9(self.conv8(x, x3), x2))
        return torch.tanh(self.head(x)) * (128.0 / AB_SCALE), None  # ab / AB_SCALE, (B, 2, H, W)


register(
    ModelSpec(
        name="cunet",
        build=lambda width, n_classes, head: CUNet(width),
        heads=("l2", "l1"),
        recoveries=("regression",),
        optimizer="adam",
        paper="Wang, Chen and Tian 2022, CU-net (Sec. 3.2)",
    )
)
