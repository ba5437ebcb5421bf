"""Each seed system as its paper describes it: CU-net's layers (Tables 5-8, Eq. 1), Liu, Gao and Li's network
and schedule, pix2pix's L1-first share, Cheng et al.'s descriptors and refinement, and the balance weights a
run may compute again (another prior, another lambda)."""

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.priors import balance_weights, smooth_prior
from training.config import TrainConfig
from training.models import create_model
from training.models.cheng15 import N_FEATURES, daisy, joint_bilateral
from training.trainer import schedule, setup


def test_cunet_downsamples_by_window_means_and_joins_all_three_encoder_maps():
    m = create_model("cunet", width=1 / 8)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs)  # Table 5: stride 1 everywhere
    assert sum(isinstance(x, nn.AvgPool2d) for x in m.modules()) == 3  # Eq. 1, three times
    c = [8, 16, 32, 64]
    for up, (chs, skip) in zip((m.conv8, m.conv9, m.conv10), ((c[2], c[2]), (c[1], c[1]), (c[0], c[0])), strict=True):
        assert up.conv[0].in_channels == chs + skip  # Table 8: conv3 -> conv8, conv2 -> conv9, conv1 -> conv10
    assert len([x for x in m.conv5_7[2].modules() if isinstance(x, nn.Conv2d)]) == 2  # conv7: two pairs (Table 7)
    assert m(torch.rand(2, 1, 64, 64))[0].shape == (2, 2, 64, 64)


def test_zhang16_liu_follows_their_figure_2():
    m = create_model("zhang16-liu")
    convs = [x for x in m.body if isinstance(x, nn.Conv2d | nn.ConvTranspose2d)]
    widths = [x.out_channels for x in convs]
    assert widths == [64, 64, 128, 128, 256, 256, 256] + [512] * 9 + [256] * 3 + [128] * 3
    assert all(x.dilation == (1, 1) for x in convs)
    with torch.device("meta"):
        big = create_model("zhang16-liu")
        out = big(torch.empty(1, 1, 256, 256))[0]
    assert out.shape == (1, 313, 64, 64)  # Conv2d-52 of their Fig. 2
    mse = create_model("zhang16-liu", width=1 / 8, head="l2")  # their MSE baseline: the same net
    ab = mse(torch.rand(2, 1, 64, 64))[0]
    assert ab.shape == (2, 2, 16, 16) and ab.abs().max() <= 128 / 110


def test_the_step_schedule_divides_the_rate_by_ten_each_sixth_of_the_run():
    cfg = TrainConfig(store="x", variant="zhang16-liu")
    assert cfg.schedule == "step" and TrainConfig(store="x", variant="full").schedule == "poly"
    zhang = TrainConfig(store="x", variant="zhang16")  # their solver: / 10 at 225k and 450k of 500k iterations
    assert zhang.schedule == "step" and zhang.lr_step == 0.45
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched, rates = schedule(cfg, opt, 60), []
    for _ in range(60):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.allclose(rates[::10], [1e-3 * 10.0**-k for k in range(6)])
    with pytest.raises(ValueError, match="schedules"):
        TrainConfig(store="x", schedule="cosine")


def test_pix2pix_trains_its_first_half_with_l1_alone_by_default(tiny_store, tmp_path):
    store, _ = tiny_store
    base = {"store": str(store), "variant": "pix2pix", "width": 1 / 8, "size": 64, "batch_size": 4, "steps": 6}
    run = setup(TrainConfig(out=str(tmp_path / "a"), **base))
    assert run.cfg.pretrain_steps == -1 and run.pretrain_steps == 3
    assert setup(TrainConfig(out=str(tmp_path / "b"), pretrain_steps=1, **base)).pretrain_steps == 1


def test_cheng15_descriptors_words_and_refinement():
    torch.manual_seed(0)
    m = create_model("cheng15")
    L = torch.rand(2, 1, 32, 32)
    assert m.features(L).shape == (2, N_FEATURES, 32, 32)
    d = daisy(L).view(2, 17, 8, 32, 32)
    assert torch.allclose(d.norm(dim=2), torch.ones(()), atol=1e-4)  # each histogram of unit length
    out = m(L)[0]  # training: one sampled pixel per 4 x 4 block, and a step of k-means
    assert out.shape == (2, 2, 8, 8) and m.counts.sum() > 0
    words = m.words.clone()
    m.eval()
    assert m(L)[0].shape == (2, 2, 32, 32) and torch.equal(words, m.words)  # every pixel; words frozen
    # the joint bilateral filter keeps a flat colour flat, and an edge of L keeps the colour edge on it
    flat = torch.full((1, 2, 16, 16), 0.3)
    assert torch.allclose(joint_bilateral(flat, torch.rand(1, 1, 16, 16)), flat, atol=1e-6)
    L = torch.zeros(1, 1, 16, 16)
    L[..., 8:] = 1.0
    ab = L.repeat(1, 2, 1, 1) * 0.5
    assert torch.allclose(joint_bilateral(ab, L), ab, atol=1e-6)


def test_a_run_can_rebalance_by_another_prior_or_lambda(tiny_store, tmp_path):
    store, _ = tiny_store
    base = {"store": str(store), "width": 1 / 8, "size": 64, "batch_size": 4, "steps": 1}
    own = setup(TrainConfig(out=str(tmp_path / "own"), **base))
    flat = setup(TrainConfig(out=str(tmp_path / "flat"), balance_lambda=1.0, **base))
    assert torch.allclose(flat.criterion.weights, torch.ones(313))  # lambda 1: no rebalancing
    lam = float(own.data.group.attrs["lambda"])  # by default, Eq. 9-10 over the store's prior smoothed as p~
    want = balance_weights(smooth_prior(own.data.prior, 5.0), lam)
    assert torch.allclose(own.criterion.weights, torch.from_numpy(want))
    raw = setup(TrainConfig(out=str(tmp_path / "raw"), prior_sigma=0.0, **base))
    assert torch.allclose(raw.criterion.weights, torch.from_numpy(raw.data.weights))  # the store's own weights
    prior = np.random.default_rng(0).dirichlet(np.ones(313))
    np.save(tmp_path / "prior.npy", prior)
    other = setup(TrainConfig(out=str(tmp_path / "other"), prior=str(tmp_path / "prior.npy"), **base))
    lam = float(other.data.group.attrs["lambda"])
    assert torch.allclose(other.criterion.weights, torch.from_numpy(balance_weights(prior, lam)))
    np.save(tmp_path / "bad.npy", np.ones(7))
    for bad, match in (("bad.npy", "expected 313"), ("none.npy", "not a readable")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(prior=str(tmp_path / bad), **base)
    with pytest.raises(ValueError, match="balance_lambda"):
        TrainConfig(balance_lambda=2.0, **base)
