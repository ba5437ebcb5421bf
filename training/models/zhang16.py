"""`zhang16`: the network of Zhang, Isola and Efros 2016, *Colorful Image Colorization* (ECCV), the main paper's
Tables 1-2 baseline; `zhang16-liu`: the smaller re-implementation of Liu, Gao and Li, *Implement of Colorful Image
Colorization* (their Fig. 2), with its own recipe.

`zhang16`: eight convolution blocks, each closed by BatchNorm: conv1-2 (64, 128 channels) and conv3 (256) end
with a stride-2 convolution (H/8 after conv3); conv4 (512); conv5-6 (512, dilation 2, the receptive field
without pooling); conv7 (512); conv8 a 4 x 4 transposed convolution (stride 2, to H/4) and two 3 x 3 (256); a
1 x 1 convolution to 313 logits at H/4. ReLU after every convolution. Trained with his soft-encoded targets
(Eq. 1: 5 nearest centers, sigma 5) of the stored categories' centers and class rebalancing (lambda 0.5, the
store's weights); colour by the annealed mean with T = 0.38. The input is L - 50 (his centring).

`zhang16-liu`: the same eight blocks as Fig. 2 lists them, narrower at the end: conv7 has 256 channels and
conv8 deconvolves to 128 (two 3 x 3 at 128 follow); Fig. 2 shows no dilation, so conv5-6 have none. Its recipe
(Sec. 4): the same soft-encoded, rebalanced cross-entropy (their Eq. 1), T = 0.38, batch 32, the rate 1e-3
divided by 10 every 5 of 30 epochs (`--schedule step`, each sixth of the run); the optimiser is not named:
Adam as Zhang's. Their baseline is the same net trained with MSE: `--head l2` (2 outputs, tanh, ab / 128 at H/4).
`width` multiplies the channels of both.
"""

from torch import nn

from training.loss import AB_SCALE
from training.models.registry import ModelSpec, register, xavier_init


def _block(in_chs: int, out_chs: int, n: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for k in range(n):
        s = stride if k == n - 1 else 1
        layers += [nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, s, dilation, dilation), nn.ReLU(inplace=True)]
    return [*layers, nn.BatchNorm2d(out_chs)]


class Zhang16(nn.Module):
    """conv1-8 and a 1 x 1 head; `conv7`, `conv8` and `dilation` tell Zhang's layout from Liu et al.'s."""

    def __init__(self, width: float = 1.0, conv7: int = 512, conv8: int = 256, dilation: int = 2, head: str = "soft"):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 128, 256, 512, conv7, conv8)]
        self.body = nn.Sequential(
            *_block(1, c[0], 2, stride=2),  # conv1: H/2
            *_block(c[0], c[1], 2, stride=2),  # conv2: H/4
            *_block(c[1], c[2], 3, stride=2),  # conv3: H/8
            *_block(c[2], c[3], 3),  # conv4
            *_block(c[3], c[3], 3, dilation=dilation),  # conv5
            *_block(c[3], c[3], 3, dilation=dilation),  # conv6
            *_block(c[3], c[4], 3),  # conv7
            nn.ConvTranspose2d(c[4], c[5], 4, 2, 1),  # conv8: H/4
            nn.ReLU(inplace=True),
            nn.Conv2d(c[5], c[5], 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[5], c[5], 3, 1, 1),
            nn.ReLU(inplace=True),
        )
        self.regression = head in ("l1", "l2")
        self.head = nn.Conv2d(c[5], 2 if self.regression else 313, 1)
        xavier_init(self)

    def forward(self, L):
        x = self.head(self.body(L * 100.0 - 50.0))
        if self.regression:
            return x.tanh() * (128.0 / AB_SCALE), None  # ab / AB_SCALE at H/4
        return x, None  # (B, 313, H/4, W/4)


register(
    ModelSpec(
        name="zhang16",
        build=lambda width, n_classes, head: Zhang16(width, head=head),
        heads=("soft", "classify"),
        recoveries=("annealed", "argmax"),
        optimizer="adam",
        betas=(0.9, 0.99),
        paper="Zhang, Isola and Efros 2016, Colorful Image Colorization (ECCV)",
        schedule="step",  # their released solver: 3e-5, / 10 at 225k and 450k of 500k iterations of 40 images
        recipe={
            "lr": 3e-5,
            "weight_decay": 1e-3,
            "batch_size": 40,
            "size": 176,
            "epochs": 16,
            "flip": True,
            "lr_step": 0.45,
        },  # fmt: skip
        stride=8,
    )
)
register(
    ModelSpec(
        name="zhang16-liu",
        build=lambda width, n_classes, head: Zhang16(width, conv7=256, conv8=128, dilation=1, head=head),
        heads=("soft", "l2", "classify"),
        recoveries=("annealed", "argmax"),
        optimizer="adam",
        betas=(0.9, 0.99),
        paper="Liu, Gao and Li, Implement of Colorful Image Colorization (after Zhang, Isola and Efros 2016)",
        schedule="step",  # 1e-3, / 10 every 5 of 30 epochs, batch 32, 150 x 150; optimiser and decay unstated
        recipe={"batch_size": 32, "size": 150, "epochs": 30, "weight_decay": 0.0, "lr_step": 1 / 6},
        stride=8,
    )
)
