"""Stage 5, priors: the category balance module (Eq. 9-10 of Wang et al.; Eq. 3-4 of Zhang et al.) and the
empirical priors it weighs."""

import io

import numpy as np

from kernels.gamut import CENTERS_F64, Q
from pipeline.common.cli import Refused, one_line
from pipeline.storage import location


def balance_weights(prior, lam: float = 0.5) -> np.ndarray:
    """Eq. 9-10: w = ((1 - lam) p + lam / Q)^-1, scaled so that sum_q p_q w_q = 1.

    Args:
        prior: float (313,) empirical distribution p of the categories; non-negative, finite, not all zero.
            It is normalised to sum 1 (so a float histogram of counts gives the same weights).
        lam: mixing weight with the uniform distribution, in [0, 1]; 0.5 as in the paper.

    Returns:
        float32 (313,) weights.
    """
    p = np.asarray(prior)
    if not np.issubdtype(p.dtype, np.floating):
        raise TypeError(f"prior must be a float array of shape ({Q},), got dtype {p.dtype}")
    if p.shape != (Q,):
        raise Refused(f"prior must have shape ({Q},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise Refused("prior must be finite, non-negative and not all zero")
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not 0.0 <= lam <= 1.0:
        raise Refused(f"lam must be a number in [0, 1], got {lam!r}")
    p = p.astype(np.float64) / p.sum(dtype=np.float64)
    mix = (1.0 - lam) * p + lam / Q
    if (mix <= 0).any():
        raise Refused("lam = 0 with empty categories in the prior gives infinite weights; use lam > 0")
    w = 1.0 / mix  # Eq. 9
    w /= (p * w).sum()  # Eq. 10
    return w.astype(np.float32)


def smooth_prior(prior, sigma: float = 5.0) -> np.ndarray:
    """Eq. 9's p~ as Zhang et al.'s Eq. 4 makes it: the empirical prior smoothed by a Gaussian of `sigma` over the
    ab plane (each category's mass spread to the categories around it by their centres' distance), renormalised;
    sigma = 0 gives it back unchanged. float64 (313,)."""
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (Q,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise Refused(f"prior must be {Q} finite non-negative numbers, not all zero")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise Refused(f"sigma must be a finite number >= 0, got {sigma}")
    p = p / p.sum()
    with np.errstate(over="ignore", under="ignore"):  # a huge sigma spreads evenly, a tiny one not at all
        var = np.float64(sigma) ** 2
        if var == 0:
            return p
        d2 = np.square(CENTERS_F64[:, None, :] - CENTERS_F64[None, :, :]).sum(-1)
        smoothed = np.exp(-d2 / (2.0 * var)) @ p
    return smoothed / smoothed.sum()


def prior_from_counts(counts) -> np.ndarray:
    """The empirical prior p (Eq. 9's p~): a (313,) integer histogram of categories, normalised to float64."""
    c = np.asarray(counts)
    if c.shape != (Q,) or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"counts must be an integer histogram of shape ({Q},), got {c.dtype} {c.shape}")
    total = c.sum()
    if total <= 0 or (c < 0).any():
        raise ValueError("counts must be non-negative with a positive total")
    return c / total


def read_prior(path) -> np.ndarray:
    """A prior of the 313 categories from a .npy file (no pickles), or Refused naming what is wrong."""
    try:
        p = np.load(io.BytesIO(location(path).read_bytes()), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise Refused(f"prior {path}: not a readable .npy array ({one_line(e)})") from None
    if p.shape != (Q,) or not np.issubdtype(p.dtype, np.floating) or not np.isfinite(p).all() or (p < 0).any():
        raise Refused(f"prior {path}: expected {Q} finite non-negative floats, found {p.dtype} {p.shape}")
    if p.sum() <= 0:
        raise Refused(f"prior {path}: all zero")
    return p
