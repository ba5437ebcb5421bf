"""`pix2pix`: the U-Net + PatchGAN colorization study (its text names no authors or title; it reports PSNR
24.7595 / SSIM 0.9260 on a COCO subset): a U-Net generator on a ResNet-18 encoder, trained with L1 plus a
conditional GAN loss against a PatchGAN discriminator (pix2pix, 70 x 70 patches: Isola, Zhu, Zhou and Efros
2017, *Image-to-Image Translation with Conditional Adversarial Networks*).

Readings where the text leaves a choice open:
- Generator: ResNet-18's stem (7 x 7 stride 2, max pooling) and four stages of two basic blocks (64, 128, 256,
  512 channels, H/4 .. H/32), taking L alone (one channel); trained from scratch (the study starts from
  ImageNet weights, which cannot be fetched here). Decoder: at each scale a 4 x 4 transposed convolution
  (x2, halving the channels), the encoder map of that scale concatenated, and a 3 x 3 conv-BN-ReLU; two
  more transposed convolutions reach H; a 1 x 1 convolution and a sigmoid (Sec. III.B.2) give (a, b) in
  [-128, 128].
- Discriminator: PatchGAN C64-C128-C256-C512-1 (4 x 4 convolutions, stride 2, 2, 2, 1, 1; BN except on the
  first; LeakyReLU 0.2), on (L, ab) at full resolution: a 70 x 70 receptive field.
- The store keeps categories: the real (a, b) given to D is each 4 x 4 block's category center plus uniform
  noise within its 10 x 10 cell (so that D cannot tell real from fake by the grid), upsampled bilinearly; the
  L1 loss compares every pixel with the centers upsampled bilinearly. Weights drawn from N(0, 0.02), as pix2pix.
- Schedule (Sec. IV.A): the generator trains with L1 alone first (50 epochs there), then adversarially for a
  length the study does not give: the first half of the run is L1 alone (`--pretrain-steps` sets another).
"""

import torch
import torch.nn.functional as F
from torch import nn

from training.loss import AB_SCALE
from training.models.registry import ModelSpec, register


class _Basic(nn.Module):
    """ResNet's basic block."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True),
            nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False), nn.BatchNorm2d(out_chs),
        )  # fmt: skip
        self.short = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.short = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


def _up(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_chs, out_chs, 4, 2, 1, bias=False), nn.BatchNorm2d(out_chs),
                         nn.ReLU(inplace=True))  # fmt: skip


def _conv(in_chs: int, out_chs: int) -> nn.Sequential:
    conv = nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class Generator(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(1, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList(
            [nn.Sequential(_Basic(c[max(0, k - 1)], c[k], 1 if k == 0 else 2), _Basic(c[k], c[k])) for k in range(4)]
        )
        # decoder: H/32 -> H/16 -> H/8 -> H/4, each joined with the stage of that scale; then H/2 and H
        self.ups = nn.ModuleList([_up(c[3], c[2]), _up(c[2], c[1]), _up(c[1], c[0])])
        self.joins = nn.ModuleList([_conv(2 * c[2], c[2]), _conv(2 * c[1], c[1]), _conv(2 * c[0], c[0])])
        self.to_half, self.to_full = _up(c[0], c[0]), _up(c[0], c[0] // 2)
        self.head = nn.Conv2d(c[0] // 2, 2, 1)
        _normal_init(self)

    def forward(self, L):
        x = self.pool(self.stem(L * 2.0 - 1.0))
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)  # H/4, H/8, H/16, H/32
        for up, join, skip in zip(self.ups, self.joins, reversed(skips[:3]), strict=True):
            x = join(torch.cat([up(x), skip], dim=1))
        x = self.to_full(self.to_half(x))
        return (torch.sigmoid(self.head(x)) * 2.0 - 1.0) * (128.0 / AB_SCALE), None  # ab / AB_SCALE, (B, 2, H, W)


class PatchDiscriminator(nn.Module):
    """(L, ab / AB_SCALE) (B, 3, H, W) -> real/fake logits of 70 x 70 patches (B, 1, ~H/8 - 2, ~W/8 - 2)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 128, 256, 512)]
        layers: list[nn.Module] = [nn.Conv2d(3, c[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for k, stride in ((1, 2), (2, 2), (3, 1)):
            layers += [nn.Conv2d(c[k - 1], c[k], 4, stride, 1, bias=False), nn.BatchNorm2d(c[k]),
                       nn.LeakyReLU(0.2, inplace=True)]  # fmt: skip
        self.net = nn.Sequential(*layers, nn.Conv2d(c[3], 1, 4, 1, 1))
        _normal_init(self)

    def forward(self, L, ab):
        return self.net(torch.cat([L * 2.0 - 1.0, ab], dim=1))


def _normal_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


register(
    ModelSpec(
        name="pix2pix",
        build=lambda width, n_classes, head: Generator(width),
        heads=("l1",),
        recoveries=("regression",),
        optimizer="adam",
        betas=(0.5, 0.999),
        paper="a U-Net + PatchGAN colorization study (no authors or title given), after Isola, Zhu, Zhou and Efros "
        "2017, Image-to-Image Translation with Conditional Adversarial Networks (CVPR)",
        discriminator=PatchDiscriminator,
        pretrain=0.5,  # 50 epochs of L1 first, then adversarial fine-tuning of a length the study does not give
        recipe={"lr": 2e-4, "lr_d": 2e-4, "batch_size": 16, "size": 256, "epochs": 100, "weight_decay": 0.0},
    )
)
