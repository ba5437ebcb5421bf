"""The category core's public functions: checked inputs, caller-facing shapes, NumPy or torch in."""

import numpy as np
from numba import get_num_threads

from kernels import bins
from kernels.gamut import CATEGORY_MATRIX, CENTERS_F32, CENTERS_F64, Q
from kernels.lab import LINEAR, WHITE_D65, XYZ_FROM_RGB, rgb_to_lab_kernel

_NO_WEIGHTS = np.empty(0, dtype=np.uint32)
_LINEAR32 = LINEAR.astype(np.float32)  # the float32 pass of `image_targets` (kernels.targets)
_M_WHITE32 = (XYZ_FROM_RGB / WHITE_D65[:, None]).astype(np.float32)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _check_rgb(rgb, name: str = "rgb") -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint8 array (..., 3) or a torch uint8 tensor, got {type(rgb)!r}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (8-bit sRGB), got {rgb.dtype}")
    if rgb.ndim == 0 or rgb.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., 3) with the channel axis last, got {rgb.shape}")
    return np.ascontiguousarray(rgb).reshape(-1, 3)


def _check_weights(weights) -> np.ndarray:
    w = np.asarray(weights)
    if w.shape != (Q,):
        raise ValueError(f"weights must have shape ({Q},), got {w.shape}")
    if w.dtype != np.float32:
        raise TypeError(f"weights must be float32 (as balance_weights returns), got {w.dtype}")
    return w


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of 8-bit sRGB: uint8 (..., 3) -> float32 (..., 3), as scikit-image's `rgb2lab`."""
    flat = _check_rgb(rgb)
    out = np.empty(flat.shape, dtype=np.float32)
    rgb_to_lab_kernel(flat, LINEAR, XYZ_FROM_RGB, WHITE_D65, out)
    return out.reshape(rgb.shape)


def encode_bins(rgb):
    """Category conversion, Eq. 5-8 of Wang et al.: uint8 RGB (..., 3) -> int16 q (...) in [0, 313).

    Identical on all 2^24 colours to the argmax of Zhang's soft-encoding (Eq. 1-2) in float64. A torch
    tensor (any device) is encoded on its device and returns a tensor.
    """
    if _is_torch(rgb):
        from kernels import torch_ops

        return torch_ops.encode_bins(rgb)
    flat = _check_rgb(rgb)
    q = np.empty(len(flat), dtype=np.int16)
    codes = bins.rgb_table()[0]
    bins.gather(flat.reshape(-1), codes, bins.pair_table(None), q.view(np.uint16), _NO_WEIGHTS, get_num_threads())
    return q.reshape(rgb.shape[:-1])


def encode_targets(rgb, weights):
    """Categories and balance weights together (Eq. 11 of Wang et al.): (q int16 (...), w float32 (...))."""
    if _is_torch(rgb):
        from kernels import torch_ops

        return torch_ops.encode_targets(rgb, weights)
    flat = _check_rgb(rgb)
    w_table = _check_weights(weights)
    q = np.empty(len(flat), dtype=np.int16)
    w = np.empty(len(flat), dtype=np.float32)
    pairs = bins.pair_table(w_table)
    bins.gather(flat.reshape(-1), bins.rgb_table()[0], pairs, q.view(np.uint16), w.view(np.uint32), get_num_threads())
    return q.reshape(rgb.shape[:-1]), w.reshape(rgb.shape[:-1])


def encode_ab(ab):
    """Nearest in-gamut category of float (a, b) (..., 2) -> int16 (...); ties go to the lowest index.

    For Lab values that did not come from one 8-bit colour (block means, resampled images).
    """
    if _is_torch(ab):
        from kernels import torch_ops

        return torch_ops.encode_ab(ab)
    if not isinstance(ab, np.ndarray) or ab.dtype not in (np.float32, np.float64):
        raise TypeError(f"ab must be a float32 or float64 numpy array (..., 2), got {getattr(ab, 'dtype', type(ab))}")
    if ab.ndim == 0 or ab.shape[-1] != 2:
        raise ValueError(f"ab must have shape (..., 2), got {ab.shape}")
    if not np.isfinite(ab).all():
        raise ValueError("ab contains NaN or infinite values")
    flat = np.ascontiguousarray(ab).reshape(-1, 2)
    q = np.empty(len(flat), dtype=np.int16)
    bins.encode_ab_kernel(flat, CATEGORY_MATRIX, CENTERS_F64, q)
    return q.reshape(ab.shape[:-1])


def check_bins(q, name: str = "q"):
    """Raise unless q is an integer array (NumPy or torch) with every value in [0, Q)."""
    if _is_torch(q):
        if q.dtype.is_floating_point or q.dtype.is_complex or str(q.dtype) == "torch.bool":
            raise TypeError(f"{name} must be an integer tensor, got {q.dtype}")
    elif not isinstance(q, np.ndarray) or not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array of categories, got {getattr(q, 'dtype', type(q))}")
    if q.numel() if _is_torch(q) else q.size:
        lo, hi = int(q.min()), int(q.max())
        if lo < 0 or hi >= Q:
            raise ValueError(f"{name} must lie in [0, {Q}), got values in [{lo}, {hi}]")


def decode_bins(q):
    """Inverse category matrix M^-1 (Eq. 16 of Wang et al.): integer q (...) -> float32 (a, b) centers (..., 2)."""
    check_bins(q)
    if _is_torch(q):
        from kernels import torch_ops

        return torch_ops.decode_bins(q)
    return CENTERS_F32[q]


def image_targets(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets of square crops: uint8 (B, S, S, 3) with S divisible by 4 ->

    (L uint8 (B, S, S) = round(L * 255 / 100), q int16 (B, S/4, S/4) = category of each 4 x 4 block's
    mean (a, b), chroma float64 (B,) = mean sqrt(a^2 + b^2) of those block means).
    """
    from kernels.targets import BLOCK, image_targets_kernel

    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(f"rgb must be a numpy uint8 array (B, S, S, 3), got {getattr(rgb, 'dtype', type(rgb))}")
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.shape[1] % BLOCK or rgb.shape[2] % BLOCK:
        raise ValueError(f"rgb must have shape (B, H, W, 3) with H and W divisible by {BLOCK}, got {rgb.shape}")
    rgb = np.ascontiguousarray(rgb)
    n, height, width = rgb.shape[:3]
    L = np.empty((n, height, width), dtype=np.uint8)
    q = np.empty((n, height // BLOCK, width // BLOCK), dtype=np.int16)
    chroma = np.empty((n, height // BLOCK), dtype=np.float64)
    image_targets_kernel(
        rgb, _LINEAR32, _M_WHITE32, LINEAR, XYZ_FROM_RGB, WHITE_D65, CATEGORY_MATRIX, CENTERS_F64, L, q, chroma
    )
    return L, q, chroma.sum(axis=1) / (q.shape[1] * q.shape[2])
