"""Zhang et al.'s Q = 313 in-gamut ab bins, carried as figures, and the category matrix M of Eq. 5-6.

The centers lie on a 10 x 10 grid of the ab plane. Sorted by a, then b, each a-row is a contiguous run of
b values, so the whole set is the 20-row table below; the category index q counts the centers in that
order (q(0, 0) = 120 and q(-30, 30) = 72, as in Figure 3 of Wang et al.).
"""

import numpy as np

Q = 313
GRID = 10  # bin width in Lab units

# (a, b_min, b_max) of each a-row, a from -90 to 100 in steps of 10.
_ROWS = (
    (-90, 50, 90), (-80, 20, 90), (-70, 0, 90), (-60, -20, 90), (-50, -30, 100),
    (-40, -40, 100), (-30, -50, 100), (-20, -50, 100), (-10, -60, 100), (0, -70, 100),
    (10, -80, 90), (20, -80, 90), (30, -90, 90), (40, -100, 90), (50, -100, 80),
    (60, -110, 80), (70, -110, 80), (80, -110, 70), (90, -110, 70), (100, -90, 0),
)  # fmt: skip

A_MIN, A_MAX = -90, 100
B_MIN, B_MAX = -110, 100
N_A = (A_MAX - A_MIN) // GRID + 1  # 20 a-rows
N_B = (B_MAX - B_MIN) // GRID + 1  # 22 b-columns


def _centers() -> np.ndarray:
    pts = [(a, b) for a, lo, hi in _ROWS for b in range(lo, hi + 1, GRID)]
    return np.array(pts, dtype=np.int64)


def _category_matrix(centers: np.ndarray) -> np.ndarray:
    """Category matrix M, Eq. 5-6 of Wang et al.: M[22 (a0/10 + 9) + (b0/10 + 11)] = q(a0, b0), else -1.

    Kept as a 2-D (N_A, N_B) table; its row-major flattening is the paper's vector. The paper says M has 420
    cells, but its own index reaches 439 (20 a-rows x 22 b-columns): 440 it is.
    """
    m = np.full((N_A, N_B), -1, dtype=np.int16)
    rows = (centers[:, 0] - A_MIN) // GRID
    cols = (centers[:, 1] - B_MIN) // GRID
    m[rows, cols] = np.arange(len(centers), dtype=np.int16)
    return m


NEAR_MARGIN = 1.0  # Lab units: a center this much farther than the nearest is still a candidate (ties, gaps)


def _cell_candidates(centers: np.ndarray) -> np.ndarray:
    """int16 (N_A, N_B, K): per cell of the grid, every center that can be the nearest, or within NEAR_MARGIN of
    the nearest, for some point of the cell (the 10 x 10 square around its grid point); -1 pads the rows.

    For a point p of the cell, the nearest center c* satisfies d(p, c*) <= min_c maxd(c, cell) =: R, so
    mind(c*, cell) <= R; any center within NEAR_MARGIN of c* has mind <= R + NEAR_MARGIN. Centers with a larger
    mind are farther than the nearest by more than NEAR_MARGIN from every point of the cell, so searching the
    candidates gives the same nearest center (the same lowest index on a tie) as searching all Q.
    """
    c = centers.astype(np.float64)
    out = []
    for row in range(N_A):
        for col in range(N_B):
            a0, b0 = A_MIN + row * GRID, B_MIN + col * GRID
            lo, hi = np.array([a0 - GRID / 2, b0 - GRID / 2]), np.array([a0 + GRID / 2, b0 + GRID / 2])
            mind = np.sqrt((np.maximum(np.maximum(lo - c, c - hi), 0.0) ** 2).sum(1))
            maxd = np.sqrt((np.maximum(np.abs(c - lo), np.abs(c - hi)) ** 2).sum(1))
            out.append(np.flatnonzero(mind <= maxd.min() + NEAR_MARGIN))
    table = np.full((N_A, N_B, max(map(len, out))), -1, dtype=np.int16)
    for k, idx in enumerate(out):
        table[k // N_B, k % N_B, : len(idx)] = idx
    return table


CENTERS = _centers()  # int64 (Q, 2): the (a, b) center of each category
CENTERS_F64 = CENTERS.astype(np.float64)
CENTERS_F32 = CENTERS.astype(np.float32)  # decode table, M^-1 of Eq. 16
CATEGORY_MATRIX = _category_matrix(CENTERS)  # int16 (N_A, N_B)
CELL_CANDIDATES = _cell_candidates(CENTERS)  # int16 (N_A, N_B, K): searched where M = -1

assert CENTERS.shape == (Q, 2)
for _a, _b, _q in ((0, 0, 120), (-30, 30, 72)):
    assert CATEGORY_MATRIX[(_a - A_MIN) // GRID, (_b - B_MIN) // GRID] == _q
CENTERS.flags.writeable = CENTERS_F64.flags.writeable = CENTERS_F32.flags.writeable = False
CATEGORY_MATRIX.flags.writeable = CELL_CANDIDATES.flags.writeable = False
