"""`cunet`: CU-net of Wang, Chen and Tian 2022, *Image Colorization Algorithm Based on Deep Learning* (Sec. 3.2,
Tables 5-8, Eq. 1 and 22): a U-Net with three down- and three up-samplings, dilated convolutions instead of max
pooling, and BN before sigmoid activations.

Readings where the text leaves a choice open:
- conv1-4: two 3 x 3 conv -> BN -> sigmoid pairs each (64, 128, 256, 512 channels), every convolution at
  stride 1 as Table 5 lists; the three down-samplings are Eq. 1's s x s window means (s = 2) between conv1-2,
  conv2-3 and conv3-4 (H/2, H/4, H/8).
- conv5-6: two dilated pairs each (rate 2, padding 2, Table 6), 512 channels; conv7: two pairs, 512 (Table 7).
- conv8-10: a 4 x 4 transposed convolution (stride 2, padding 1) halving the channels (256, 128, 64), then one
  3 x 3 pair (Table 7). Table 8's three connections join the encoder's map of each resolution to it:
  conv1 -> conv10 (64 channels, H), conv2 -> conv9 (128, H/2) and conv3 -> conv8 (256, H/4; the table's
  "Conv3-Conv7" is read as the up-sampling that follows conv7, the only place of conv3's size), each
  concatenated with the up-sampled map before its 3 x 3 pair.
- A 1 x 1 convolution and tanh give ab / 128 at H x W (Sec. 3.3); the loss is Eq. 22's L2 on ab. The store
  keeps categories, so the target of each 4 x 4 block is its category's center, and the loss compares every
  pixel with the centers upsampled bilinearly (a loss on block means alone left the pixels of a block free:
  checkerboard colours).
- The paper guides colour with a reference's global histogram (Table 10, "+Global histogram"):
  `training.guidance` reweights after it, for every registered model.
"""

import torch
from torch import nn

from training.loss import AB_SCALE
from training.models.registry import ModelSpec, register, xavier_init


def _pairs(in_chs: int, out_chs: int, n: int, dilation: int = 1, pool: bool = False) -> nn.Sequential:
    """n conv -> BN -> sigmoid pairs at stride 1, after Eq. 1's 2 x 2 window mean when `pool`."""
    layers: list[nn.Module] = [nn.AvgPool2d(2)] if pool else []
    for k in range(n):
        conv = nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, 1, dilation, dilation, bias=False)
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
        self.conv2 = _pairs(c[0], c[1], 2, pool=True)  # H/2
        self.conv3 = _pairs(c[1], c[2], 2, pool=True)  # H/4
        self.conv4 = _pairs(c[2], c[3], 2, pool=True)  # H/8
        self.conv5_7 = nn.Sequential(_pairs(c[3], c[3], 2, dilation=2), _pairs(c[3], c[3], 2, dilation=2),
                                     _pairs(c[3], c[3], 2))  # fmt: skip
        self.conv8 = _Up(c[3], c[2], skip_chs=c[2])  # H/4, + conv3
        self.conv9 = _Up(c[2], c[1], skip_chs=c[1])  # H/2, + conv2
        self.conv10 = _Up(c[1], c[0], skip_chs=c[0])  # H, + conv1
        self.head = nn.Conv2d(c[0], 2, 1)
        xavier_init(self)

    def forward(self, L):
        x1 = self.conv1(L)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x = self.conv5_7(self.conv4(x3))
        x = self.conv10(self.conv9(self.conv8(x, x3), x2), x1)
        return torch.tanh(self.head(x)) * (128.0 / AB_SCALE), None  # ab / AB_SCALE, (B, 2, H, W)


register(
    ModelSpec(
        name="cunet",
        build=lambda width, n_classes, head: CUNet(width),
        heads=("l2", "l1"),
        recoveries=("regression",),
        optimizer="adam",  # the paper names no optimiser, rate, batch or size: these are ours
        paper="Wang, Chen and Tian 2022, Image Colorization Algorithm Based on Deep Learning (CU-net)",
        recipe={"weight_decay": 0.0},
        stride=8,  # three 2 x 2 poolings
    )
)
