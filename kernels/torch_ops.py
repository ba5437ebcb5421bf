"""The category core on torch tensors, on whatever device they live (the GPU path).

The 8-bit encoder gathers from the same compressed exact table as the CPU path, copied once per
device (8.25 MiB), so CPU and GPU agree bit for bit. The float encoder mirrors `kernels.bins.nearest_bin`
in float64, with the exact full search for borders and cells without an in-gamut center.
"""

import torch

from kernels import bins
from kernels.gamut import A_MIN, B_MIN, CATEGORY_MATRIX, CENTERS_F32, CENTERS_F64, GRID, N_A, N_B, Q

_cache: dict[tuple[str, torch.device], torch.Tensor] = {}


def _on(name: str, make, device: torch.device) -> torch.Tensor:
    key = (name, device)
    if key not in _cache:
        _cache[key] = make().to(device)
    return _cache[key]


def _table(device) -> tuple[torch.Tensor, torch.Tensor]:
    codes = _on("codes", lambda: torch.from_numpy(bins.rgb_table()[0].astype("int64")), device)
    palette = _on("palette", lambda: torch.from_numpy(bins.rgb_table()[1].astype("int16")), device)
    return codes, palette


def _check_rgb(rgb: torch.Tensor):
    if rgb.dtype != torch.uint8:
        raise TypeError(f"rgb must have dtype torch.uint8 (8-bit sRGB), got {rgb.dtype}")
    if rgb.dim() == 0 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (..., 3) with the channel axis last, got {tuple(rgb.shape)}")


def encode_bins(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3) -> int16 (...), on rgb's device."""
    _check_rgb(rgb)
    codes, palette = _table(rgb.device)
    c = rgb.long()
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    block = ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)  # as kernels.bins.colour_index
    m = (block << bins.BLOCK_BITS) | ((r & 7) << 6) | ((g & 7) << 3) | (b & 7)
    code = (codes[m >> 4] >> ((m & 15) << 1)) & 3
    return palette[(block << 2) | code]


def encode_targets(rgb: torch.Tensor, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int16 (...), w float32 (...)), on rgb's device."""
    q = encode_bins(rgb)
    w = torch.as_tensor(weights, device=rgb.device)
    if w.shape != (Q,) or w.dtype != torch.float32:
        raise ValueError(f"weights must be float32 ({Q},), got {w.dtype} {tuple(w.shape)}")
    return q, w[q.long()]


def decode_bins(q: torch.Tensor) -> torch.Tensor:
    """integer (...) -> float32 (..., 2) centers, on q's device (range checked by the caller)."""
    return _on("centers", lambda: torch.from_numpy(CENTERS_F32.copy()), q.device)[q.long()]


def encode_ab(ab: torch.Tensor) -> torch.Tensor:
    """float (..., 2) -> int16 (...): nearest in-gamut center in float64, ties to the lowest index."""
    if ab.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"ab must be a float32 or float64 tensor, got {ab.dtype}")
    if ab.dim() == 0 or ab.shape[-1] != 2:
        raise ValueError(f"ab must have shape (..., 2), got {tuple(ab.shape)}")
    if not torch.isfinite(ab).all():
        raise ValueError("ab contains NaN or infinite values")
    dev = ab.device
    flat = ab.reshape(-1, 2).to(torch.float64)  # (P, 2)
    cell = torch.floor(flat / GRID + 0.5)  # Eq. 7
    row = cell[:, 0].long() - A_MIN // GRID
    col = cell[:, 1].long() - B_MIN // GRID
    inside = (row >= 0) & (row < N_A) & (col >= 0) & (col < N_B)
    matrix = _on("matrix", lambda: torch.from_numpy(CATEGORY_MATRIX.copy()), dev)
    q = torch.full((flat.shape[0],), -1, dtype=torch.int16, device=dev)
    q[inside] = matrix[row[inside], col[inside]]  # Eq. 8
    off = (flat - cell * GRID).abs().amax(dim=1)
    hard = (q < 0) | (2.0 * GRID * (GRID / 2.0 - off) < 1e-9)
    if hard.any():  # exact search; argmin returns the first (lowest) index of a tie
        centers = _on("centers64", lambda: torch.from_numpy(CENTERS_F64.copy()), dev)
        d2 = ((flat[hard, None, :] - centers[None]) ** 2).sum(-1)  # (P_hard, Q)
        q[hard] = d2.argmin(dim=1).to(torch.int16)
    return q.reshape(ab.shape[:-1])
