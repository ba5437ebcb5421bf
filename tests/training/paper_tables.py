"""The papers' own layer tables, written from the papers (never read off the code); `paper_checks` checks a
built model or loss against them."""

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Row:
    name: str
    kernel: int
    stride: int
    padding: int
    out: int  # output channels at width 1
    after: tuple[str, ...]  # what follows the convolution, in order
    dilation: int = 1
    div: int | None = None  # output resolution = input size / div (None: the paper does not fix it)
    transposed: bool = False
    fixed: bool = False  # `out` does not scale with the width (ab, logits)
    skip: str = ""  # the row whose activated output is concatenated to this row's input


@dataclass(frozen=True)
class Table:
    system: str
    source: str
    cin: int  # input channels
    rows: tuple[Row, ...]


BN_SIG, RELU, RELU_BN = ("batch_norm", "sigmoid"), ("relu",), ("relu", "batch_norm")

# Wang, Chen and Tian 2022 (CU-net), Tables 5-7 (kernel, stride, padding, channel of every conv), Sec. 3.2.2 (conv5-6:
# dilation rate 2), Sec. 3.2.1-3.2.3 and 3.2.5 (every conv is a conv -> BN -> sigmoid pair: BN before sigmoid, not
# ReLU), Sec. 3.2.3 end and 3.4 (a final 1x1 conv, tanh on ab / 128). Resolutions: three down- and three
# up-samplings (Sec. 3.2), the deconvolutions at stride 2 and Table 8's joins fix H, H/2, H/4, H/8.
# Where the paper's text disagrees with its tables, the tables are taken:
# - conv7: Table 7 lists two pairs (Conv7-1, Conv7-2); Sec. 3.2.3 says "3 conv BN sig pairs".
# - channels: Table 7 halves them at each deconvolution (512 -> 256 -> 128 -> 64); Sec. 3.2.3 says "doubled".
# - skips: Table 8 joins Conv1-Conv10 (64), Conv2-Conv9 (128), Conv3-Conv7 (256); Sec. 3.2.4 says "conv2 and conv3
#   are connected to conv8 and conv9 respectively". Conv7 has 512 channels at H/8, so Table 8's 256-channel
#   "Conv3-Conv7" join is read as the one after conv7's output is deconvolved: into Conv8-2 (256, H/4).
CUNET = Table("CU-net", "Wang, Chen and Tian 2022, Tables 5-8", 1, (
    Row("Conv1-1", 3, 1, 1, 64, BN_SIG, div=1), Row("Conv1-2", 3, 1, 1, 64, BN_SIG, div=1),
    Row("Conv2-1", 3, 1, 1, 128, BN_SIG, div=2), Row("Conv2-2", 3, 1, 1, 128, BN_SIG, div=2),
    Row("Conv3-1", 3, 1, 1, 256, BN_SIG, div=4), Row("Conv3-2", 3, 1, 1, 256, BN_SIG, div=4),
    Row("Conv4-1", 3, 1, 1, 512, BN_SIG, div=8), Row("Conv4-2", 3, 1, 1, 512, BN_SIG, div=8),
    Row("Conv5-1", 3, 1, 2, 512, BN_SIG, 2, 8), Row("Conv5-2", 3, 1, 2, 512, BN_SIG, 2, 8),
    Row("Conv6-1", 3, 1, 2, 512, BN_SIG, 2, 8), Row("Conv6-2", 3, 1, 2, 512, BN_SIG, 2, 8),
    Row("Conv7-1", 3, 1, 1, 512, BN_SIG, div=8), Row("Conv7-2", 3, 1, 1, 512, BN_SIG, div=8),
    Row("Deconv8-1", 4, 2, 1, 256, BN_SIG, div=4, transposed=True),
    Row("Conv8-2", 3, 1, 1, 256, BN_SIG, div=4, skip="Conv3-2"),
    Row("Deconv9-1", 4, 2, 1, 128, BN_SIG, div=2, transposed=True),
    Row("Conv9-2", 3, 1, 1, 128, BN_SIG, div=2, skip="Conv2-2"),
    Row("Deconv10-1", 4, 2, 1, 64, BN_SIG, div=1, transposed=True),
    Row("Conv10-2", 3, 1, 1, 64, BN_SIG, div=1, skip="Conv1-2"),
    Row("1x1 out", 1, 1, 0, 2, ("tanh",), div=1, fixed=True),
))  # fmt: skip


# Zhang, Isola and Efros 2016, Colorful Image Colorization, Table 4 / released network (deploy_v2, its PyTorch port):
# 3x3 convs, ReLU after each, BatchNorm closing conv1-7; conv1-3 end with stride 2 (H/8), conv4 dilation 1,
# conv5-6 dilation 2 (padding 2), conv7 dilation 1; conv8 a 4x4 stride-2 transposed conv and two 3x3 (H/4), no BN;
# a 1x1 conv to 313 logits.
def _zhang_block(b: int, n: int, out: int, div: int, stride: int = 1, dil: int = 1) -> tuple[Row, ...]:
    return tuple(Row(f"conv{b}_{k + 1}", 3, stride if k == n - 1 else 1, dil, out, RELU_BN if k == n - 1 else RELU, dil,
                     div * stride if k == n - 1 else div) for k in range(n))  # fmt: skip


ZHANG16 = Table("zhang16", "Zhang et al. 2016, Colorful Image Colorization, Table 4 / released network", 1, (
    *_zhang_block(1, 2, 64, 1, 2), *_zhang_block(2, 2, 128, 2, 2), *_zhang_block(3, 3, 256, 4, 2),
    *_zhang_block(4, 3, 512, 8), *_zhang_block(5, 3, 512, 8, dil=2), *_zhang_block(6, 3, 512, 8, dil=2),
    *_zhang_block(7, 3, 512, 8),
    Row("conv8_1", 4, 2, 1, 256, RELU, div=4, transposed=True), Row("conv8_2", 3, 1, 1, 256, RELU, div=4),
    Row("conv8_3", 3, 1, 1, 256, RELU, div=4), Row("conv8_313", 1, 1, 0, 313, (), div=4, fixed=True),
))  # fmt: skip

# The U-Net + PatchGAN study, Sec. III.A/C, names a PatchGAN on (L, ab) (conditional D(x, y), 3 channels) whose
# logits go to BCEWithLogitsLoss (so no sigmoid in D). The layers are Isola et al. 2017 (pix2pix) Sec. 6.1.2: the
# 70 x 70 discriminator C64-C128-C256-C512, 4x4 convs, BatchNorm on all but C64, LeakyReLU 0.2, a last conv to 1
# channel; strides 2, 2, 2, 1, 1 and padding 1 as in their released code.
LEAKY = "leaky_relu(0.2)"
PATCHGAN = Table("PatchGAN D", "Isola et al. 2017 Sec. 6.1.2 (70 x 70 PatchGAN), as the U-Net + PatchGAN study", 3, (
    Row("C64", 4, 2, 1, 64, (LEAKY,)), Row("C128", 4, 2, 1, 128, ("batch_norm", LEAKY)),
    Row("C256", 4, 2, 1, 256, ("batch_norm", LEAKY)), Row("C512", 4, 1, 1, 512, ("batch_norm", LEAKY)),
    Row("out", 4, 1, 1, 1, (), fixed=True),
))  # fmt: skip
PATCH_FIELD = 70  # Isola et al. 2017: "70 x 70 PatchGAN"

# Wang et al. 2022 (AFF net), Sec. 3.4, Eq. 12-14: AFF_k takes all five encoder scales En1..En5, each resized to
# its own scale (Subs_n: down by n, Ups_n: up by n, "": as is): AFF1 at En3's, AFF2 at En4's, AFF3 at En5's.
AFF_EQUATIONS = {
    1: ("Subs4", "Subs2", "", "Ups2", "Ups4"),  # Eq. 12
    2: ("Subs8", "Subs4", "Subs2", "", "Ups2"),  # Eq. 13
    3: ("Subs16", "Subs8", "Subs4", "Subs2", ""),  # Eq. 14
}
# Sec. 3.1: six encoder blocks, each doubling the channels, x^g = En6 is 2048 x h/32 x w/32, so En1..En6 have 64 ..
# 2048 channels; Eq. 12-14 put En1..En5 at h .. h/16 (En1 = 16 x En5), so En1 keeps the input's size although
# Sec. 3.1 says every block halves it (the paper contradicts itself; Eq. 12-14 and x^g's h/32 are taken).
# (channels, h / size) of En1..En6; Sec. 3.3 / Fig. 4: each block is one 1x1 conv path plus two 3x3 convs.
AFF_ENCODER = ((64, 1), (128, 2), (256, 4), (512, 8), (1024, 16), (2048, 32))
AFF_BLOCK_KERNELS = (1, 3, 3)
AFF_COLOUR = (313, 4)  # Sec. 3.1: Z-hat is 313 x h/4 x w/4
AFF_CLASSES = 1000  # Sec. 3.6: Y-hat is 1000 x 1 x 1


def aff_encoder_conv_weights() -> int:
    """The encoder's convolution kernels at width 1 from Sec. 3.1 and Fig. 4: cin*cout (1x1) + 9*cin*cout +
    9*cout*cout per block, from the 1-channel L. (The whole network's count is not derivable: the paper gives
    neither the AFF modules' nor the decoder's nor the classifier convolution's widths, nor biases.)"""
    cin, total = 1, 0
    for cout, _ in AFF_ENCODER:
        total += cin * cout + 9 * cin * cout + 9 * cout * cout
        cin = cout
    return total


def _scaled(row: Row, width: float) -> int:
    n = row.out * Fraction(width).limit_denominator(1000)
    if row.fixed:
        return row.out
    if n.denominator != 1:
        raise ValueError(f"{row.name}: {row.out} channels x width {width} is not whole; pick another width")
    return int(n)


def in_channels(table: Table, width: float = 1.0) -> list[int]:
    """Each row's input channels from the table: the previous row's output, plus a skip's."""
    outs, cins = {}, []
    for k, row in enumerate(table.rows):
        cin = table.cin if k == 0 else _scaled(table.rows[k - 1], width)
        cins.append(cin + (outs[row.skip] if row.skip else 0))
        outs[row.name] = _scaled(row, width)
    return cins


def table_conv_weights(table: Table) -> int:
    """The convolution kernels' weights at width 1 (k * k * cin * cout per row), from the table alone."""
    return sum(r.kernel**2 * cin * r.out for r, cin in zip(table.rows, in_channels(table), strict=True))
