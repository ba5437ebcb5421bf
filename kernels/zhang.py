"""Zhang et al. 2016's Gaussian soft-encoding (Eq. 1-4 of Wang et al.): the baseline and the exactness reference.

Faithful to Zhang's released code: Lab from scikit-image's `rgb2lab` in float64; the `neighbours` nearest of
the 313 centers by a tree search (his code: scikit-learn's ball tree, 10 neighbours; here SciPy's k-d tree,
the same neighbours); Gaussian weights exp(-d^2 / 2 sigma^2) with sigma = 5, normalised to sum 1 (Eq. 1);
the hard category is the argmax of the distribution Z (Eq. 2; ties go to the lowest index, as `np.argmax`)
and its balance weight w_{q*} (Eq. 2-4). Wang et al.'s text quotes 32 neighbours and sigma = 0.5: both are
options of `SoftEncoding`.
"""

from dataclasses import dataclass

import numpy as np

from kernels.gamut import CENTERS_F64, Q


@dataclass(frozen=True)
class SoftEncoding:
    """Settings of the soft-encoding, Eq. 1."""

    neighbours: int = 10
    sigma: float = 5.0

    def __post_init__(self):
        if not 1 <= self.neighbours <= Q:
            raise ValueError(f"neighbours must be in [1, {Q}], got {self.neighbours}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


_tree = None


def _center_tree():
    global _tree
    if _tree is None:
        from scipy.spatial import cKDTree

        _tree = cKDTree(CENTERS_F64)
    return _tree


def lab64(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's float64 Lab of uint8 RGB (..., 3)."""
    from skimage.color import rgb2lab

    return rgb2lab(rgb)


def soft_encode_sparse(ab: np.ndarray, cfg: SoftEncoding = SoftEncoding()) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 in sparse form: the indices (P, k) of the k nearest centers of ab (P, 2) and their weights."""
    dists, inds = _center_tree().query(np.asarray(ab, dtype=np.float64), k=cfg.neighbours)
    dists, inds = dists.reshape(len(ab), -1), inds.reshape(len(ab), -1)  # k = 1 drops the axis
    # Shifted by the nearest distance so that small sigma cannot underflow to 0 / 0; Eq. 1 is unchanged.
    wts = np.exp(-(dists**2 - dists[:, :1] ** 2) / (2 * cfg.sigma**2))
    wts /= wts.sum(axis=1, keepdims=True)
    return inds, wts


def soft_encode(ab: np.ndarray, cfg: SoftEncoding = SoftEncoding()) -> np.ndarray:
    """Eq. 1: the soft-encoded distribution Z (P, Q) float64 of ab (P, 2)."""
    inds, wts = soft_encode_sparse(ab, cfg)
    z = np.zeros((len(ab), Q))
    np.put_along_axis(z, inds, wts, axis=1)
    return z


def argmax_sparse(inds: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """argmax over q of the dense Z (Eq. 2) from its sparse form, ties to the lowest index like `np.argmax`."""
    top = wts.max(axis=1, keepdims=True)
    return np.where(wts == top, inds, Q).min(axis=1)


def reference_bins(rgb: np.ndarray, cfg: SoftEncoding = SoftEncoding(), chunk: int = 1 << 20) -> np.ndarray:
    """Zhang's hard category q* (Eq. 2) of uint8 RGB (..., 3) as int16 (...): the exactness reference."""
    flat = rgb.reshape(-1, 3)
    out = np.empty(len(flat), dtype=np.int16)
    for s in range(0, len(flat), chunk):
        ab = lab64(flat[s : s + chunk])[:, 1:]
        out[s : s + chunk] = argmax_sparse(*soft_encode_sparse(ab, cfg))
    return out.reshape(rgb.shape[:-1])


def zhang_targets(
    rgb: np.ndarray, weights: np.ndarray, cfg: SoftEncoding = SoftEncoding(), chunk: int = 224 * 224
) -> tuple[np.ndarray, np.ndarray]:
    """The full baseline as Zhang computes it: dense Z (Eq. 1), q* = argmax Z (Eq. 2) and w_{q*} (Eq. 2-4).

    Works through `chunk` pixels at a time (one 224 x 224 image by default) to bound the dense Z's memory.
    """
    flat = rgb.reshape(-1, 3)
    q = np.empty(len(flat), dtype=np.int16)
    for s in range(0, len(flat), chunk):
        z = soft_encode(lab64(flat[s : s + chunk])[:, 1:], cfg)  # (P, Q)
        q[s : s + chunk] = z.argmax(axis=1)
    return q.reshape(rgb.shape[:-1]), weights[q].reshape(rgb.shape[:-1])
