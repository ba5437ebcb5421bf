"""Category balance module, Eq. 9-10."""

import numpy as np
import pytest

from benchmarks.photos import zhang_prior
from kernels.gamut import Q
from pipeline.priors import balance_weights, prior_from_counts


def random_prior(seed=0, empty=0):
    p = np.random.default_rng(seed).dirichlet(np.full(Q, 0.3))
    p[:empty] = 0
    return p / p.sum()


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
def test_expected_weight_is_one(lam):
    p = random_prior()
    w = balance_weights(p, lam)
    assert w.dtype == np.float32 and w.shape == (Q,)
    assert abs(float((p * w.astype(np.float64)).sum()) - 1) < 1e-6  # Eq. 10
    expected = 1 / ((1 - lam) * p + lam / Q)  # Eq. 9
    assert np.allclose(w, expected / (p * expected).sum(), rtol=1e-6)


def test_rare_categories_weigh_more():
    p = random_prior(1)
    w = balance_weights(p)
    order = np.argsort(p)
    assert (np.diff(w[order]) <= 1e-6 * w.max()).all()


def test_uniform_prior_or_lambda_one_gives_unit_weights():
    assert np.allclose(balance_weights(np.full(Q, 1 / Q)), 1)
    assert np.allclose(balance_weights(random_prior(2), lam=1.0), 1)


def test_float_histogram_is_normalised():
    p = random_prior(3)
    assert np.allclose(balance_weights(p * 12345.0), balance_weights(p))


def test_zhang_imagenet_prior():
    prior = zhang_prior()
    if prior is None:
        pytest.skip("Zhang et al.'s ImageNet prior is not present")
    p = np.load(prior)
    w = balance_weights(p)
    assert abs(float((p * w).sum()) - 1) < 1e-6
    assert w.argmax() == p.argmin() and w.argmin() == p.argmax()


@pytest.mark.parametrize(
    "prior,lam,err",
    [
        (np.ones(Q, np.int64), 0.5, TypeError),
        (np.ones(312), 0.5, ValueError),
        (np.full(Q, np.nan), 0.5, ValueError),
        (-np.ones(Q), 0.5, ValueError),
        (np.zeros(Q), 0.5, ValueError),
        (np.ones(Q), 1.5, ValueError),
        (np.ones(Q), True, ValueError),
        (random_prior(4, empty=5), 0.0, ValueError),
    ],
)
def test_bad_input(prior, lam, err):
    with pytest.raises(err, match="must|lam"):
        balance_weights(prior, lam)


def test_prior_from_counts():
    c = np.arange(Q)
    assert np.allclose(prior_from_counts(c), c / c.sum())
    with pytest.raises(ValueError):
        prior_from_counts(np.zeros(Q, np.int64))
    with pytest.raises(ValueError):
        prior_from_counts(np.ones(Q))
