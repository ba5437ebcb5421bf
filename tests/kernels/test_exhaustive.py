"""The spec of the category core, checked on every one of the 16,777,216 8-bit sRGB colours."""

import numpy as np
import pytest
import torch

import kernels
from kernels.zhang import argmax_sparse, lab64, soft_encode_sparse

pytestmark = pytest.mark.slow
CHUNK = 1 << 21


@pytest.fixture(scope="module")
def reference(all_colours):
    """scikit-image's float64 Lab and Zhang's soft-encoding argmax (Eq. 1-2) for all colours."""
    lab = np.empty(all_colours.shape, dtype=np.float64)
    q = np.empty(len(all_colours), dtype=np.int16)
    for s in range(0, len(all_colours), CHUNK):
        lab[s : s + CHUNK] = lab64(all_colours[s : s + CHUNK])
        q[s : s + CHUNK] = argmax_sparse(*soft_encode_sparse(lab[s : s + CHUNK, 1:]))
    return lab, q


def test_encode_bins_equals_zhang_argmax_on_every_colour(all_colours, reference):
    q = kernels.encode_bins(all_colours)
    wrong = np.flatnonzero(q != reference[1])
    assert len(wrong) == 0, f"{len(wrong)} colours differ, e.g. {all_colours[wrong[:5]].tolist()}"


def test_rgb_to_lab_within_1e3_of_scikit_image_on_every_colour(all_colours, reference):
    lab = kernels.rgb_to_lab(all_colours)
    assert lab.dtype == np.float32
    assert np.abs(lab - reference[0]).max() <= 1e-3


def test_stored_L_and_uniform_block_bins_exact_on_every_colour(all_colours, reference):
    """image_targets (vectorised cube root) against scikit-image's Lab: L rounding and bins, all colours."""
    n = 1 << 22
    for s in range(0, len(all_colours), n):  # a quarter of the colours per image, each as a 4 x 4 block
        img = np.repeat(np.repeat(all_colours[s : s + n].reshape(1024, 4096, 3), 4, axis=0), 4, axis=1)
        L, q, _ = kernels.image_targets(img[None])
        want_L = np.floor(reference[0][s : s + n, 0] * 255 / 100 + 0.5).astype(np.uint8)
        assert np.array_equal(L[0, ::4, ::4].ravel(), want_L)
        assert np.array_equal(q[0].ravel(), reference[1][s : s + n])


def test_float32_pass_of_image_targets_within_a_quarter_of_its_margins(all_colours, reference):
    """What lets `image_targets` decide L and the bins in float32 outside its margins: the float32 L * 2.55, a
    and b of every colour (the kernel's own arithmetic) against scikit-image's float64."""
    from kernels.api import _LINEAR32, _M_WHITE32
    from kernels.lab import companding32_into
    from kernels.targets import _L_A, _L_B, _L_HALF, AB_MARGIN, L_MARGIN

    lin = _LINEAR32[all_colours]  # (N, 3) float32
    f = []
    for c in range(3):
        t = lin[:, 0] * _M_WHITE32[c, 0] + lin[:, 1] * _M_WHITE32[c, 1] + lin[:, 2] * _M_WHITE32[c, 2]
        f.append(np.empty_like(t))
        companding32_into(t, f[c])
    lab = reference[0]
    err_l = np.abs((f[1] * _L_A + (_L_B + _L_HALF)).astype(np.float64) - (lab[:, 0] * 255 / 100 + 0.5)).max()
    err_a = np.abs((np.float32(500) * (f[0] - f[1])).astype(np.float64) - lab[:, 1]).max()
    err_b = np.abs((np.float32(200) * (f[1] - f[2])).astype(np.float64) - lab[:, 2]).max()
    assert err_l < L_MARGIN / 4, err_l  # measured 1.1e-4
    assert max(err_a, err_b) < AB_MARGIN / 4, (err_a, err_b)  # measured 2.6e-4 and 1.1e-4


def test_torch_path_equals_numpy_path_on_every_colour(all_colours):
    q = kernels.encode_bins(torch.from_numpy(all_colours))
    assert q.dtype == torch.int16
    assert np.array_equal(q.numpy(), kernels.encode_bins(all_colours))


def test_float_encoder_agrees_on_every_colour(all_colours, reference):
    """The float path (for block means) gives the same categories from float64 Lab."""
    ab = np.ascontiguousarray(reference[0][:, 1:])
    assert np.array_equal(kernels.encode_ab(ab), reference[1])
    assert np.array_equal(kernels.encode_ab(torch.from_numpy(ab)).numpy(), reference[1])


@pytest.mark.gpu
def test_cuda_path_equals_cpu_on_every_colour(all_colours, reference):
    q = kernels.encode_bins(torch.from_numpy(all_colours).cuda())
    assert q.is_cuda and np.array_equal(q.cpu().numpy(), reference[1])
    ab = torch.from_numpy(np.ascontiguousarray(reference[0][:, 1:])).cuda()
    assert np.array_equal(kernels.encode_ab(ab).cpu().numpy(), reference[1])
