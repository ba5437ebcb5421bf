"""The device-side evaluation maths against scikit-image, which the earlier evaluation called image by image."""

import warnings

import numpy as np
import torch
from skimage.color import lab2rgb
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from training import metrics


def skimage_rgb8(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rgb = lab2rgb(np.concatenate([L[..., None], ab], axis=-1))
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def test_lab_to_rgb_psnr_and_ssim_equal_scikit_image():
    rng = np.random.default_rng(0)
    L, ab = rng.uniform(0, 100, (3, 40, 50)), rng.uniform(-110, 110, (3, 40, 50, 2))  # out of gamut too
    want = np.stack([skimage_rgb8(L[k], ab[k]) for k in range(3)])
    got = metrics.lab_to_rgb8(torch.from_numpy(L), torch.from_numpy(ab))
    assert np.array_equal(got.numpy(), want)
    truth = torch.from_numpy(rng.integers(0, 256, want.shape, dtype=np.uint8))
    psnr = [peak_signal_noise_ratio(truth[k].numpy(), want[k], data_range=255) for k in range(3)]
    ssim = [structural_similarity(truth[k].numpy(), want[k], channel_axis=-1, data_range=255) for k in range(3)]
    assert np.allclose(metrics.psnr(truth, got).numpy(), psnr, rtol=0, atol=1e-12)
    assert np.allclose(metrics.ssim(truth, got).numpy(), ssim, rtol=0, atol=1e-12)


def test_colourfulness_of_gray_and_of_a_colour():
    gray = torch.full((1, 8, 8, 3), 128, dtype=torch.uint8)
    assert metrics.colourfulness(gray).item() == 0.0
    red = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    red[..., 0] = 200  # rg = 200, yb = 100 everywhere: 0.3 * hypot(200, 100)
    assert np.isclose(metrics.colourfulness(red).item(), 0.3 * np.hypot(200, 100))


def test_colour_overflow_counts_colours_painted_on_near_neutral_truth():
    from training.metrics import NEUTRAL, OVERFLOW, overflow_counts

    truth = torch.zeros((2, 4, 4, 2), dtype=torch.float64)
    truth[1, :2] = torch.tensor([30.0, 30.0])  # image 1: half of it colourful (chroma 42), half neutral
    pred = truth.clone()
    assert overflow_counts(pred, truth)[0].tolist() == [0, 0]  # the truth itself paints nothing
    assert overflow_counts(torch.zeros_like(truth), truth)[0].tolist() == [0, 0]  # nor does gray
    painted, neutral = overflow_counts(pred + torch.tensor([OVERFLOW + 1.0, 0.0]), truth)
    assert neutral.tolist() == [16, 8] and painted.tolist() == [16, 8]  # colourful pixels are not counted
    barely = truth.clone()
    barely[0, 0, 0] = torch.tensor([OVERFLOW - 0.5, 0.0])  # within the threshold: not overflow
    barely[0, 0, 1] = torch.tensor([0.0, -(OVERFLOW + 0.5)])  # beyond it, in any hue
    assert overflow_counts(barely, truth)[0].tolist() == [1, 0]
    tint = torch.full((1, 1, 1, 2), NEUTRAL / 2**0.5 + 0.01, dtype=torch.float64)  # chroma just above NEUTRAL
    assert overflow_counts(tint + 50, tint)[1].tolist() == [0]


def test_mae_is_the_mean_absolute_error_of_8_bit_rgb():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8) for _ in range(2))
    expected = np.abs(a.astype(float) - b.astype(float)).reshape(3, -1).mean(1)
    np.testing.assert_allclose(metrics.mae(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected)
