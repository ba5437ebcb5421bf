"""The Zhang baseline: Eq. 1 is a distribution over the k nearest centers; its argmax is Eq. 2."""

import numpy as np
import pytest

import kernels
from kernels.gamut import CENTERS_F64, Q
from kernels.zhang import SoftEncoding, argmax_sparse, soft_encode, soft_encode_sparse, zhang_targets
from pipeline.priors import balance_weights


@pytest.mark.parametrize("cfg", [SoftEncoding(), SoftEncoding(neighbours=32, sigma=0.5), SoftEncoding(1, 5.0)])
def test_soft_encoding_is_a_distribution_on_the_nearest_centers(cfg):
    ab = np.random.default_rng(0).uniform(-130, 130, (500, 2))  # in and far out of gamut
    z = soft_encode(ab, cfg)
    assert z.shape == (500, Q)
    assert np.allclose(z.sum(1), 1) and (z >= 0).all()
    assert ((z > 0).sum(1) <= cfg.neighbours).all()
    d = np.sqrt(((ab[:, None] - CENTERS_F64[None]) ** 2).sum(-1))
    expected = np.exp(-(d**2 - d.min(1, keepdims=True) ** 2) / (2 * cfg.sigma**2)) * (z > 0)
    assert np.allclose(z, expected / expected.sum(1, keepdims=True))


def test_sparse_argmax_equals_dense_argmax_including_ties():
    rng = np.random.default_rng(2)
    ab = np.concatenate([rng.uniform(-100, 100, (2000, 2)), rng.integers(-10, 10, (500, 2)) * 5.0])
    inds, wts = soft_encode_sparse(ab)
    assert np.array_equal(argmax_sparse(inds, wts), soft_encode(ab).argmax(1))


def test_bad_settings_rejected():
    with pytest.raises(ValueError, match="neighbours"):
        SoftEncoding(neighbours=0)
    with pytest.raises(ValueError, match="sigma"):
        SoftEncoding(sigma=0)


def test_baseline_targets_equal_fast_path(photos):
    w = balance_weights(np.random.default_rng(3).dirichlet(np.ones(Q)))
    q, wq = zhang_targets(photos[:2], w)
    qf, wf = kernels.encode_targets(photos[:2], w)
    assert np.array_equal(q, qf) and np.array_equal(wq, wf)
