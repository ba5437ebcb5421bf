"""Each system trains by its own paper's recipe when nothing else is given, at any size its paper uses (a side the
network cannot take is centre-cropped to its stride), with Eq. 9's p~ smoothed as Zhang's Eq. 4 makes it."""

import argparse

import numpy as np
import pytest
import torch

from pipeline.priors import balance_weights, smooth_prior
from tests.conftest import make_store
from training import checkpoint
from training.config import TrainConfig, config_from_args
from training.data import device_batch
from training.models import MODELS, fit, spec_of
from training.run import main as train_main
from training.run import train

# What each paper prints (docs/training.md has the sources): (optimizer, lr, batch, size, epochs, flips).
PAPERS = {
    "full": ("sgd", 1e-3, 64, 224, 10, False),  # Wang et al. 2022, Sec. 4.1
    "zhang16": ("adam", 3e-5, 40, 176, 16, True),  # Zhang et al.'s released solver and data layer
    "zhang16-liu": ("adam", 1e-3, 32, 150, 30, False),  # Liu, Gao and Li, Sec. 4
    "pix2pix": ("adam", 2e-4, 16, 256, 100, False),  # the U-Net + PatchGAN study, Sec. III.D and IV.A
}


def recipe_rows(text: str) -> dict[str, dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = next(line for line in lines if "weight decay" in line)
    keys = [c.strip() for c in header.strip("|").split("|")]
    start = lines.index(header)
    rows = [
        dict(zip(keys, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[start + 1 :]
    ]
    return {r["name"]: r for r in rows}


def test_list_models_shows_each_systems_paper_recipe(capsys):
    assert train_main(["--list-models"]) == 0
    rows = recipe_rows(capsys.readouterr().out)
    assert set(rows) == set(MODELS)
    for name, (opt, lr, batch, size, epochs, flips) in PAPERS.items():
        r = rows[name]
        assert (r["optimizer"], float(r["lr"]), int(r["batch"]), int(r["epochs"])) == (opt, lr, batch, epochs), name
        assert r["size (trains at)"].split()[0] == str(size) and r["flips"] == ("yes" if flips else "no"), name
    assert rows["zhang16-liu"]["size (trains at)"] == "150 (144)"  # centre-cropped to its stride of 8
    assert rows["pix2pix"]["betas / momentum"] == "(0.5, 0.999)" and "D lr 0.0002" in rows["pix2pix"]["other"]
    assert rows["zhang16"]["weight decay"] == "0.001" and "0.45" in rows["zhang16"]["schedule"]


@pytest.mark.parametrize("name", PAPERS)
def test_no_flag_means_the_papers_recipe_and_a_flag_still_wins(name):
    opt, lr, batch, size, epochs, flips = PAPERS[name]
    cfg = TrainConfig(store="s", variant=name)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.size, cfg.epochs, cfg.flip) == (opt, lr, batch, size, epochs,
                                                                                       flips)  # fmt: skip
    assert TrainConfig(store="s", variant=name, lr=0.5, flip=not flips).lr == 0.5
    assert TrainConfig(store="s", variant=name, flip=not flips).flip is (not flips)


def test_the_cpu_preset_keeps_an_adam_nets_own_rate():
    args = argparse.Namespace(variant="pix2pix", store=None, config=None)
    assert config_from_args(args).lr == 2e-4
    assert config_from_args(argparse.Namespace(variant="full", store=None, config=None)).lr == 0.05


def test_a_side_the_network_cannot_take_is_centre_cropped_with_its_targets():
    assert fit(150, 8) == 144 and fit(176, 8) == 176 and fit(256, 32) == 256 and fit(150, 4) == 148
    S, size, crop = 160, 150, 144
    q = torch.arange((S // 4) ** 2, dtype=torch.int16).reshape(1, S // 4, S // 4)
    L = torch.arange(S * S, dtype=torch.float32).reshape(1, S, S).remainder(251).to(torch.uint8)
    batch = {"L": L, "q": q, "label": torch.zeros(1, dtype=torch.int16), "flip": torch.zeros(1, dtype=torch.bool)}
    got = device_batch(batch, torch.device("cpu"), size, crop=crop)
    assert got["L"].shape == (1, 1, crop, crop) and got["q"].shape == (1, crop // 4, crop // 4)
    # this test's own reading: the block under each 4 x 4 block's centre pixel of the resized, cropped image
    off = (size - crop) // 2
    for i, j in [(0, 0), (5, 17), (35, 35), (20, 3)]:
        y, x = off + 4 * i + 2, off + 4 * j + 2  # a pixel of the 150 x 150 image
        sy, sx = int(y * S / size), int(x * S / size)  # nearest: the source pixel it came from
        assert got["q"][0, i, j] == q[0, sy // 4, sx // 4], (i, j)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("recipes") / "s", n=8, size=64)[0]


@pytest.mark.parametrize("name", ["zhang16-liu", "zhang16", "pix2pix", "cunet"])
def test_a_few_steps_at_the_papers_own_size_train_and_evaluate(name, store, tmp_path):
    out = tmp_path / name
    result = train(TrainConfig(store=str(store), out=str(out), variant=name, width=1 / 8, batch_size=4, steps=2,
                               holdout=0.25, eval_images=2, tensorboard=False, device="cpu"))  # fmt: skip
    state = checkpoint.load(out / "checkpoint-last.pt")
    assert state["config"]["size"] == spec_of(name).recipe["size"] and state["step"] == 2
    assert np.isfinite(result["evaluation"]["model"]["psnr"])


def test_the_prior_is_smoothed_as_p_tilde_by_default():
    delta = np.zeros(313)
    delta[120] = 1.0  # (a, b) = (0, 0): its four neighbours lie 10 away, the diagonal ones 14.1
    s = smooth_prior(delta, 5.0)
    from kernels.gamut import CENTERS_F64

    d2 = np.square(CENTERS_F64 - CENTERS_F64[120]).sum(1)
    want = np.exp(-d2 / 50.0)
    np.testing.assert_allclose(s, want / want.sum(), rtol=1e-12)
    assert np.array_equal(smooth_prior(delta, 0.0), delta)
    raw = np.random.default_rng(0).random(313) ** 8  # peaked, as a small store's is
    assert not np.allclose(balance_weights(smooth_prior(raw)), balance_weights(raw))
    assert TrainConfig(store="s").prior_sigma == 5.0
    with pytest.raises(ValueError, match="prior_sigma"):
        TrainConfig(store="s", prior_sigma=-1.0)


def test_training_weights_by_the_smoothed_store_prior_and_sigma_0_by_the_stores_own(store):
    from training.data import StoreData
    from training.trainer import balance

    data = StoreData(str(store), 0.25, 0, 0)
    smoothed = balance(TrainConfig(store=str(store)), data)
    lam = float(data.group.attrs.get("lambda", 0.5))
    np.testing.assert_allclose(smoothed, balance_weights(smooth_prior(data.prior, 5.0), lam), rtol=1e-6)
    assert np.array_equal(balance(TrainConfig(store=str(store), prior_sigma=0.0), data), data.weights)


@pytest.mark.parametrize("sigma", [1e-200, 1e-150, 1e-3, 1e308])
def test_any_finite_sigma_gives_a_distribution(sigma):
    p = np.random.default_rng(1).random(313)
    s = smooth_prior(p, sigma)
    assert np.isfinite(s).all() and (s >= 0).all() and s.sum() == pytest.approx(1.0)
