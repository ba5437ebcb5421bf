"""The registered systems and losses against the papers' own tables (tests/training/paper_tables.py): each check
passes on the real model or loss and rejects mutants built by monkeypatching the code."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.training import loss_checks as lc
from tests.training import paper_checks as pc
from tests.training import paper_tables as pt
from training import gan, loss
from training.models import aff, create_model, cunet, spec_of, zhang16

W = 1 / 8  # every table channel count times 1/8 is whole


def on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return create_model(name)


def conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))


# --- the real systems follow the tables -------------------------------------------------------------------------


def test_cunet_follows_tables_5_to_8():
    pc.check_cunet(create_model("cunet", width=W), width=W)


def test_zhang16_follows_zhangs_released_network():
    pc.check_zhang16(create_model("zhang16", width=W), width=W)


def test_pix2pix_follows_the_study_and_the_70px_patchgan():
    pc.check_pix2pix_d(spec_of("pix2pix").discriminator(W), width=W)
    pc.check_pix2pix_g(create_model("pix2pix", width=W))


@pytest.mark.parametrize("name, table", [("cunet", pt.CUNET), ("zhang16", pt.ZHANG16)])
def test_activations_as_the_papers_give_them(name, table):
    pc.check_activations(create_model(name, width=W), table, torch.rand(1, 1, 64, 64))


def test_channel_counts_at_the_papers_width():
    pc.check_cunet(on_meta("cunet"))
    pc.check_zhang16(on_meta("zhang16"))
    with torch.device("meta"):
        pc.check_pix2pix_d(spec_of("pix2pix").discriminator(1.0))
    pc.check_aff_encoder(on_meta("full"))


def test_the_aff_modules_fuse_all_five_encoder_scales():
    pc.check_aff_inputs(create_model("full", width=W))
    pc.check_aff_inputs(create_model("unet+aff", width=W))
    pc.check_aff_encoder(create_model("full", width=W), width=W)


def test_the_aff_loss_follows_eq_18_to_20():
    lc.check_aff_loss(loss.Criterion)  # returns "mean over pixels": Eq. 19 prints a sum over h, w (see the report)
    lc.check_aff_loss(loss.Criterion, lam_col=2.0, lam_cls=0.5)


def test_pix2pix_g_loss_and_one_sided_label_smoothing():
    lc.check_g_loss(gan.adversarial_step, lam_l1=100.0)
    lc.check_g_loss(gan.adversarial_step, lam_l1=7.0)
    lc.check_label_smoothing(gan.adversarial_step, smoothing=0.1)
    lc.check_label_smoothing(gan.adversarial_step, smoothing=0.0)


# --- parameter counts: the model's, against a sum computed from the paper's table (never the model against itself)


@pytest.mark.parametrize("name, table", [("cunet", pt.CUNET), ("zhang16", pt.ZHANG16)])
def test_convolution_weights_equal_the_tables_sum(name, table):
    assert conv_weights(on_meta(name)) == pt.table_conv_weights(table)


def test_patchgan_weights_equal_the_tables_sum():
    with torch.device("meta"):
        disc = spec_of("pix2pix").discriminator(1.0)
    assert conv_weights(disc) == pt.table_conv_weights(pt.PATCHGAN)


def test_aff_encoder_weights_equal_the_papers_sum():
    # Only the encoder: Wang et al. give neither the AFF modules' output channels nor the decoder's widths nor the
    # classifier convolution's width (nor biases), so the whole network's count cannot be derived from the paper.
    assert conv_weights(on_meta("full").encoder) == pt.aff_encoder_conv_weights()


# --- mutants: each check rejects a model or loss that departs from the paper -------------------------------------


def cunet_pairs(dilation_1=False, relu=False, sigmoid_first=False, strided=False):
    """A replacement for cunet._pairs (conv -> BN -> sigmoid pairs after an optional 2x2 window mean)."""

    def pairs(in_chs, out_chs, n, dilation=1, pool=False):
        d = 1 if dilation_1 else dilation
        layers = [nn.AvgPool2d(2)] if pool and not strided else []
        for k in range(n):
            stride = 2 if strided and pool and k == 0 else 1
            conv = nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, stride, d, d, bias=False)
            act = nn.ReLU() if relu else nn.Sigmoid()
            layers += [conv, act, nn.BatchNorm2d(out_chs)] if sigmoid_first else [conv, nn.BatchNorm2d(out_chs), act]
        return nn.Sequential(*layers)

    return pairs


def cunet_forward(skip3_from_conv3_1=False, no_skip1=False):
    def forward(self, L):
        x1 = self.conv1(L)
        x2 = self.conv2(x1)
        h = self.conv3[:4](x2)  # window mean, Conv3-1 pair
        x3 = self.conv3[4:](h)
        x = self.conv5_7(self.conv4(x3))
        x = self.conv8(x, h if skip3_from_conv3_1 else x3)
        x = self.conv10(self.conv9(x, x2), torch.zeros_like(x1) if no_skip1 else x1)
        return torch.tanh(self.head(x)), None

    return forward


def up_with_relu(self, x, skip=None):
    x = torch.relu(self.up(x))  # the real _Up calls torch.sigmoid here, no module: the trace must still see it
    return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


def cunet_conv7_three_pairs(mp):
    init = cunet.CUNet.__init__

    def patched(self, width=1.0):
        init(self, width)
        c = self.conv5_7[2][0].in_channels
        self.conv5_7[2] = cunet._pairs(c, c, 3)

    mp.setattr(cunet.CUNet, "__init__", patched)


CUNET_MUTANTS = {
    "dilation 1 everywhere": (lambda mp: mp.setattr(cunet, "_pairs", cunet_pairs(dilation_1=True)), "dilation"),
    "ReLU instead of sigmoid": (lambda mp: (mp.setattr(cunet, "_pairs", cunet_pairs(relu=True)),
                                            mp.setattr(torch, "sigmoid", torch.relu)), "after"),  # fmt: skip
    "sigmoid before BN (Table 9's worse order)": (lambda mp: mp.setattr(cunet, "_pairs",
                                                                         cunet_pairs(sigmoid_first=True)), "after"),
    "stride-2 convs instead of Eq. 1's window mean": (lambda mp: mp.setattr(cunet, "_pairs",
                                                                            cunet_pairs(strided=True)), "stride"),
    "functional ReLU after the deconvolutions": (lambda mp: mp.setattr(cunet._Up, "forward", up_with_relu),
                                                 "Deconv8-1: after"),
    "conv7 with three pairs (the text, not Table 7)": (cunet_conv7_three_pairs, "Conv7-2|Deconv8-1"),
    "conv8's skip from Conv3-1": (lambda mp: mp.setattr(cunet.CUNet, "forward", cunet_forward(True)), "Conv3-2"),
    "no Conv1-Conv10 skip": (lambda mp: mp.setattr(cunet.CUNet, "forward", cunet_forward(no_skip1=True)), "Conv1-2"),
}  # fmt: skip


@pytest.mark.parametrize("mutant", CUNET_MUTANTS)
def test_cunet_mutants_are_rejected(monkeypatch, mutant):
    apply, match = CUNET_MUTANTS[mutant]
    apply(monkeypatch)
    with pytest.raises(AssertionError, match=match):
        pc.check_cunet(create_model("cunet", width=W), width=W)


def test_check_activations_rejects_relu_in_cunet(monkeypatch):
    monkeypatch.setattr(cunet, "_pairs", cunet_pairs(relu=True))
    with pytest.raises(AssertionError, match="Conv1-1: after is \\('batch_norm', 'relu'\\)"):
        pc.check_activations(create_model("cunet", width=W), pt.CUNET, torch.rand(1, 1, 64, 64))


def zhang_block(dilation_1=False, stride_first=False, bn_first=False):
    def block(in_chs, out_chs, n, stride=1, dilation=1):
        d, layers = 1 if dilation_1 else dilation, []
        for k in range(n):
            s = stride if k == (0 if stride_first else n - 1) else 1
            conv = nn.Conv2d(in_chs if k == 0 else out_chs, out_chs, 3, s, d, d)
            layers += [conv, nn.BatchNorm2d(out_chs), nn.ReLU()] if bn_first else [conv, nn.ReLU()]
        return layers if bn_first else [*layers, nn.BatchNorm2d(out_chs)]

    return block


ZHANG_MUTANTS = {
    "dilation 1 everywhere": (dict(dilation_1=True), "dilation"),
    "stride 2 on each block's first conv": (dict(stride_first=True), "stride"),
    "BatchNorm before every ReLU": (dict(bn_first=True), "after"),
}


@pytest.mark.parametrize("mutant", ZHANG_MUTANTS)
def test_zhang16_mutants_are_rejected(monkeypatch, mutant):
    kw, match = ZHANG_MUTANTS[mutant]
    monkeypatch.setattr(zhang16, "_block", zhang_block(**kw))
    with pytest.raises(AssertionError, match=match):
        pc.check_zhang16(create_model("zhang16", width=W), width=W)


def test_liu_et_al_s_reimplementation_is_not_zhangs_network():
    with pytest.raises(AssertionError, match="dilation"):
        pc.check_zhang16(create_model("zhang16-liu", width=W), width=W)


def test_patchgan_mutants_are_rejected(monkeypatch):
    leaky = nn.LeakyReLU
    disc = spec_of("pix2pix").discriminator(W)
    c512 = [m for m in disc.modules() if isinstance(m, nn.Conv2d)][3]
    monkeypatch.setattr(c512, "stride", (2, 2))
    with pytest.raises(AssertionError, match="C512: stride"):
        pc.check_pix2pix_d(disc, width=W)
    monkeypatch.undo()
    monkeypatch.setattr(nn, "LeakyReLU", lambda slope=0.01, inplace=False: leaky(0.01, inplace))
    with pytest.raises(AssertionError, match="leaky_relu"):
        pc.check_pix2pix_d(spec_of("pix2pix").discriminator(W), width=W)


def test_a_tanh_generator_output_is_rejected(monkeypatch):
    monkeypatch.setattr(torch, "sigmoid", torch.tanh)
    with pytest.raises(AssertionError, match="sigmoid"):
        pc.check_pix2pix_g(create_model("pix2pix", width=W))


def aff_inputs_mutant(keep):
    forward = aff.AFF.forward

    def patched(self, feats, size):
        return forward(self, [f if keep(f.shape[-2], size[0]) else torch.zeros_like(f) for f in feats], size)

    return patched


@pytest.mark.parametrize("keep, match", [(lambda n, own: n == own, "En1"), (lambda n, own: n >= own, "En4")],
                         ids=["one scale only", "no upsampled (Ups) inputs"])  # fmt: skip
def test_aff_modules_fed_by_fewer_scales_are_rejected(monkeypatch, keep, match):
    monkeypatch.setattr(aff.AFF, "forward", aff_inputs_mutant(keep))
    with pytest.raises(AssertionError, match=match):
        pc.check_aff_inputs(create_model("full", width=W))


def test_the_plain_unet_ablation_has_no_aff():
    with pytest.raises(AssertionError, match="three AFF modules"):
        pc.check_aff_inputs(create_model("unet", width=W))


@pytest.mark.parametrize("attr, value, match", [("lam_cls", 1.0, "class term"), ("weights", None, "Eq. 19")],
                         ids=["lam_cls ignored", "balance weights ignored"])  # fmt: skip
def test_aff_loss_mutants_are_rejected(monkeypatch, attr, value, match):
    init = loss.Criterion.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        setattr(self, attr, value if value is not None else torch.ones_like(getattr(self, attr)))

    monkeypatch.setattr(loss.Criterion, "__init__", patched)
    with pytest.raises(AssertionError, match=match):
        lc.check_aff_loss(loss.Criterion)


def bce_mutant(monkeypatch, when: float, target: float | None = None, factor: float = 1.0):
    """BCE calls whose target is all `when` get `target` instead, or their value times `factor`."""
    bce = F.binary_cross_entropy_with_logits

    def patched(logits, tgt, *a, **kw):
        if torch.allclose(tgt, torch.full_like(tgt, when)):
            if target is not None:
                return bce(logits, torch.full_like(tgt, target), *a, **kw)
            return bce(logits, tgt, *a, **kw) * factor
        return bce(logits, tgt, *a, **kw)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", patched)


@pytest.mark.parametrize("when, target, factor, match",
                         [(1.0, None, 0.0, "no GAN term"), (1.0, None, 100.0, "100 x L_cGAN")],
                         ids=["no GAN term", "GAN term weighted lambda"])  # fmt: skip
def test_g_loss_mutants_are_rejected(monkeypatch, when, target, factor, match):
    bce_mutant(monkeypatch, when, target, factor)
    with pytest.raises(AssertionError, match=match):
        lc.check_g_loss(gan.adversarial_step, lam_l1=100.0)


@pytest.mark.parametrize("when, target, match", [(0.0, 0.1, "discriminator's target for generated"),
                                                 (1.0, 0.9, "generator's target"),
                                                 (0.9, 1.0, "discriminator's target for real")],
                         ids=["two-sided", "smoothing on G's side", "no smoothing"])  # fmt: skip
def test_label_smoothing_mutants_are_rejected(monkeypatch, when, target, match):
    bce_mutant(monkeypatch, when, target)
    with pytest.raises(AssertionError, match=match):
        lc.check_label_smoothing(gan.adversarial_step, smoothing=0.1)


def test_cheng15_follows_the_reviews_description():
    pc.check_cheng15(create_model("cheng15"))


@pytest.mark.parametrize("mutant", ["sigmoid hidden", "full-width hidden", "activated output"])
def test_cheng15_mutants_are_rejected(monkeypatch, mutant):
    from training.models import cheng15

    if mutant == "sigmoid hidden":
        monkeypatch.setattr(nn, "ReLU", lambda *a, **kw: nn.Sigmoid())
    elif mutant == "activated output":
        init = cheng15.Cheng15.__init__

        def patched(self, *a, **kw):
            init(self, *a, **kw)
            self.mlp.append(nn.ReLU())

        monkeypatch.setattr(cheng15.Cheng15, "__init__", patched)
    model = create_model("cheng15", width=2.0 if mutant == "full-width hidden" else 1.0)
    with pytest.raises(AssertionError):
        pc.check_cheng15(model)
