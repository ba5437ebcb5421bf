"""`zhang16`: the network of Zhang, Isola and Efros, "Colorful Image Colorization" (ECCV 2016), as the main
paper's Tables 1-2 baseline, and Liu, Gao and Li's *Implement of Colorful Image Colorization* re-implements it.

Eight convolution blocks, each closed by BatchNorm: conv1-2 (64, 128 channels) and conv3 (256) end with a
stride-2 convolution (H/8 after conv3); conv4 (512); conv5-6 (512, dilation 2, the receptive field without
pooling); conv7 (512); conv8 a 4 x 4 transposed convolution (stride 2, to H/4) and two 3 x 3 (256); a 1 x 1
convolution to 313 logits at H/4 (56 x 56 for 224). ReLU after every convolution. About 32 M parameters.
Trained with his soft-encoded targets (Eq. 1: 5 nearest centers, sigma 5) of the stored categories' centers and
class rebalancing (lambda 0.5, the store's weights); colour by the annealed mean with T = 0.38.
The input is L - 50 (his centring); `width` multiplies the channels.
"""

from torch import nn

from training.models.registry import ModelSpec, register, xavier_init


def _block(in_chs: int, out_chs: int, n: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for k in range(n):
        s = stride if k == n - 1 else 1
        layers += [nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, s, dilation, dilation), nn.ReLU(inplace=True)]
    return [*layers, nn.BatchNorm2d(out_chs)]


class Zhang16(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 128, 256, 512)]
        self.body = nn.Sequential(
            *_block(1, c[0], 2, stride=2),  # conv1: H/2
            *_block(c[0], c[1], 2, stride=2),  # conv2: H/4
            *_block(c[1], c[2], 3, stride=2),  # conv3: H/8
            *_block(c[2], c[3], 3),  # conv4
            *_block(c[3], c[3], 3, dilation=2),  # conv5
            *_block(c[3], c[3], 3, dilation=2),  # conv6
            *_block(c[3], c[3], 3),  # conv7
            nn.ConvTranspose2d(c[3], c[2], 4, 2, 1),  # conv8: H/4
            nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[2], 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[2], 3, 1, 1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(c[2], 313, 1)
        xavier_init(self)

    def forward(self, L):
        return self.head(self.body(L * 100.0 - 50.0)), None  # (B, 313, H/4, W/4)


register(
    ModelSpec(
        name="zhang16",
        build=lambda width, n_classes, head: Zhang16(width),
        heads=("soft", "classify"),
        recoveries=("annealed", "argmax"),
        optimizer="adam",
        betas=(0.9, 0.99),
        paper="Zhang, Isola and Efros 2016, Colorful Image Colorization (ECCV)",
    )
)
