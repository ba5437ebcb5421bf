"""Global-histogram guidance and Zhang's raw accuracy (AuC), against their definitions."""

import numpy as np
import torch

import kernels
from training.guidance import Reference, guided_ab
from training.metrics import AUC_MAX
from training.metrics import auc as auc_t


def auc(ab, ab_true, weights=None) -> float:
    w = None if weights is None else torch.from_numpy(weights)[None]
    return float(auc_t(torch.from_numpy(ab)[None], torch.from_numpy(ab_true)[None], w)[0])


def test_auc_is_the_area_under_the_share_within_each_threshold():
    ab = np.zeros((8, 8, 2))
    assert auc(ab, ab) == 1.0
    far = ab + np.array([45.0, 60.0])  # error 75 everywhere: within t for t = 75..150
    assert np.isclose(auc(far, ab), (AUC_MAX + 1 - 75) / (AUC_MAX + 1))
    half = ab.copy()
    half[:4] += np.array([0.0, 200.0])  # half the pixels beyond every threshold
    assert np.isclose(auc(half, ab), 0.5)
    w = np.ones((8, 8))
    w[4:] = 3.0  # the exact pixels weigh 3x: 3/4 of the weight
    assert np.isclose(auc(half, ab, w), 0.75)


def test_a_classifier_is_steered_to_the_reference_colours():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 2] = 200  # a blue reference
    ref = Reference.of_rgb(rgb)
    (q_ref,) = np.flatnonzero(ref.hist == ref.hist.max())
    logits = torch.zeros(2, 313, 4, 4)  # no opinion: the reference decides
    ab = guided_ab(logits, "classify", "argmax", [ref, ref])
    want = torch.from_numpy(kernels.decode_bins(np.array([q_ref]))[0])
    assert torch.allclose(ab[:, :, 0, 0], want.expand(2, 2))
    assert torch.equal(
        guided_ab(logits, "classify", "argmax", None), guided_ab(logits, "classify", "argmax", [ref, ref], 0)
    )


def test_a_regressor_takes_the_reference_quantiles():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ref = Reference.of_rgb(rgb)
    pred = torch.from_numpy(rng.normal(0, 0.1, (1, 2, 32, 32)).astype(np.float32))  # (a, b) / 110
    ab = guided_ab(pred, "l1", "regression", [ref])
    lab = kernels.rgb_to_lab(rgb)
    for c in range(2):  # same values as the reference, in the prediction's order
        assert np.allclose(np.sort(ab[0, c].numpy().ravel()), np.sort(lab[..., 1 + c].ravel()), atol=1e-4)
        assert np.array_equal(np.argsort(ab[0, c].numpy().ravel()), np.argsort(pred[0, c].numpy().ravel()))
    half = guided_ab(pred, "l1", "regression", [ref], 0.5)
    assert torch.allclose(half, 0.5 * ab + 0.5 * pred * 110, atol=1e-4)
