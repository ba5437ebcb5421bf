"""Category conversion (Eq. 5-8 of Wang et al.), made exact, and its inverse M^-1 (Eq. 16).

Eq. 7-8 round each (a, b) to the center of its 10 x 10 cell and look the cell up in the category matrix.
That equals the argmax of Zhang et al.'s Gaussian soft-encoding (Eq. 1-2) because Eq. 1 decreases with
distance, so the argmax is the nearest in-gamut center -- *except* where a colour sits on or within
rounding distance of a cell border, or in a cell without an in-gamut center (M = -1, Eq. 6). Here:

- `nearest_bin` returns the nearest center together with a lower bound on the squared-distance gap to
  the runner-up; on an out-of-gamut cell it searches the cell's candidates (at most 14 centers, see
  `kernels.gamut.CELL_CANDIDATES`), far outside the grid all 313.
- For 8-bit input, every one of the 2^24 colours is encoded once, in float64, into a 32 MiB table
  (`build_rgb_table`). Colours whose gap is under `margin` (none at the default, see docs/categories.md)
  are handed to the Zhang reference itself (`kernels.zhang`), so the table equals that reference exactly.
- An 8 x 8 x 8 block of colours never holds more than 4 categories, so the table is kept as a 2-bit code
  per colour in Morton order (4 MiB) plus a 4-entry palette per block (256 KiB, stays in L2), 4.25 MiB
  instead of 32 (`rgb_table`). The gather (`gather`) works in chunks of `CHUNK` pixels: first the Morton
  indices, prefetching each code's cache line, then the branch-free lookups and the balance weight (Eq. 2),
  so the code-table misses of a chunk overlap instead of stalling one by one.
"""

import threading

import numpy as np

from kernels.gamut import A_MIN, B_MIN, CATEGORY_MATRIX, CELL_CANDIDATES, CENTERS_F64, GRID, N_A, N_B, NEAR_MARGIN, Q
from kernels.jit import kernel, prange, prefetch
from kernels.lab import LINEAR, WHITE_D65, XYZ_FROM_RGB, lab_of

N_COLOURS = 1 << 24
# Squared-distance gap (Lab units^2) under which a table entry is taken from the Zhang reference instead.
# Float64 Lab differs between implementations by ~1e-12; the closest 8-bit colour to a border has a gap
# of 8.4e-7. Any value between the two gives the same table.
DEFAULT_MARGIN = 1e-7
_FAR = 1000.0  # beyond this |a| or |b| the cell arithmetic is skipped for a plain search


@kernel()
def nearest_bin(a, b, matrix, centers):
    """Nearest in-gamut center of (a, b), Eq. 7-8 of Wang et al., with a search where M = -1 (Eq. 6).

    Returns (q, gap): gap is a lower bound of d^2(second nearest) - d^2(nearest); 0 means a tie, in which
    case q is the lowest index among the nearest. In a cell without a center only the cell's candidates
    (`kernels.gamut.CELL_CANDIDATES`, at most 14 of the 313) are searched: every center that can be the nearest,
    or within NEAR_MARGIN of it, somewhere in the cell, so the nearest and any near-tie are among them.
    """
    full = True
    row = col = 0
    if abs(a) < _FAR and abs(b) < _FAR:
        i = int(np.floor(a / GRID + 0.5))  # Eq. 7
        j = int(np.floor(b / GRID + 0.5))
        row = i - A_MIN // GRID
        col = j - B_MIN // GRID
        if 0 <= row < N_A and 0 <= col < N_B:
            if matrix[row, col] >= 0:
                off = max(abs(a - i * GRID), abs(b - j * GRID))
                # The nearest other grid point is the axis neighbour across the nearer border.
                return matrix[row, col], 2.0 * GRID * (GRID / 2.0 - off)
            full = False
    best = np.inf
    second = np.inf
    q = -1
    n = centers.shape[0] if full else CELL_CANDIDATES.shape[2]
    for t in range(n):
        k = t if full else CELL_CANDIDATES[row, col, t]
        if k < 0:
            break
        da = a - centers[k, 0]
        db = b - centers[k, 1]
        d2 = da * da + db * db
        if d2 < best:  # candidates ascend, so the lowest index wins a tie
            second = best
            best = d2
            q = k
        elif d2 < second:
            second = d2
    if not full:  # a non-candidate is farther than the nearest by more than NEAR_MARGIN
        second = min(second, best + NEAR_MARGIN * (NEAR_MARGIN + 2.0 * np.sqrt(best)))
    return q, second - best


@kernel()
def exact_bin(a, b, matrix, centers):
    """Nearest in-gamut center of float64 (a, b); a near-tie is settled by exact search (lowest index wins)."""
    q, gap = nearest_bin(a, b, matrix, centers)
    if gap < 1e-9:  # on a border: exact float64 search, lowest index wins a tie
        best = np.inf
        for k in range(centers.shape[0]):
            d2 = (a - centers[k, 0]) ** 2 + (b - centers[k, 1]) ** 2
            if d2 < best:
                best = d2
                q = k
    return q


@kernel(parallel=True)
def encode_ab_kernel(ab, matrix, centers, out):
    """Fill out (N,) int16 with the nearest center of ab (N, 2); near-ties resolved by exact search."""
    for i in prange(ab.shape[0]):
        out[i] = exact_bin(np.float64(ab[i, 0]), np.float64(ab[i, 1]), matrix, centers)


@kernel(parallel=True)
def build_table_kernel(linear, m, white, matrix, centers, margin, table, unsure):
    """Fill table (2^24,) int16 with the category of every 8-bit colour r << 16 | g << 8 | b."""
    for idx in prange(table.shape[0]):
        L, a, b = lab_of(idx >> 16, (idx >> 8) & 255, idx & 255, linear, m, white)
        q, gap = nearest_bin(a, b, matrix, centers)
        table[idx] = q
        unsure[idx] = gap < margin


def _spread_bits() -> np.ndarray:
    """uint32 (256,): bit k of v moved to bit 3k, for Morton (bit-interleaved) colour indices."""
    v = np.arange(256, dtype=np.uint32)
    return sum(((v >> k) & 1) << (3 * k) for k in range(8)).astype(np.uint32)


SPREAD = _spread_bits()
# uint32 (3, 256): the Morton bits of r, g and b, already shifted into place (m = S[0, r] | S[1, g] | S[2, b]).
SPREAD3 = np.stack([SPREAD << 2, SPREAD << 1, SPREAD]).astype(np.uint32)
BLOCK_BITS = 9  # a palette block is 8 x 8 x 8 colours: 9 Morton bits
CHUNK = 256  # pixels whose code lines are prefetched together by `gather`


@kernel(parallel=True)
def compress_kernel(flat, codes, palette):
    """Palette-compress the flat table: per 8x8x8 Morton block, <= 4 categories and a 2-bit code per colour.

    flat (2^24,) int16 indexed r << 16 | g << 8 | b; fills codes (2^22,) uint8 (four 2-bit codes a byte, in
    Morton order) and palette (2^15 * 4,) uint16 (unused slots repeat the block's last category).
    Returns the largest number of categories met in one block (> 4 means the layout cannot hold the table).
    """
    n_blocks = palette.shape[0] // 4
    worst = np.zeros(n_blocks, dtype=np.int64)
    for blk in prange(n_blocks):
        base = blk << BLOCK_BITS
        n = 0
        for j in range(1 << BLOCK_BITS):
            m = base | j
            r = g = b = 0
            for k in range(8):  # undo the bit interleaving
                r |= ((m >> (3 * k + 2)) & 1) << k
                g |= ((m >> (3 * k + 1)) & 1) << k
                b |= ((m >> (3 * k)) & 1) << k
            q = flat[(r << 16) | (g << 8) | b]
            c = 0
            while c < n and palette[4 * blk + c] != q:
                c += 1
            if c == n:
                if n < 4:
                    palette[4 * blk + n] = q
                n += 1
            if c < 4:
                codes[m >> 2] |= np.uint8(c << ((m & 3) << 1))
        for c in range(min(n, 4), 4):
            palette[4 * blk + c] = palette[4 * blk + min(n, 4) - 1]
        worst[blk] = n
    return worst.max()


@kernel()
def lookup(m, codes, palette):
    """Category of the colour with uint32 Morton index m: its 2-bit code, then its block's palette entry."""
    code = (codes[m >> np.uint32(2)] >> ((m & np.uint32(3)) << np.uint32(1))) & np.uint32(3)
    return palette[((m >> np.uint32(BLOCK_BITS)) << np.uint32(2)) | code]


@kernel(parallel=True)
def gather(rgb, s_r, s_g, s_b, codes, palette, weights, q_out, w_out, n_threads):
    """Fill q_out (N,) int16 with the category of each colour of rgb (3N,) uint8 (r, g, b, r, ...) and, unless
    w_out is empty, w_out (N,) float32 with its weight (Eq. 2). s_r, s_g, s_b: the rows of `SPREAD3`;
    palette: uint16.

    Each of n_threads threads walks a contiguous range in chunks of CHUNK pixels: the Morton indices of a
    chunk first, with a prefetch of each code's line, then the lookups, whose code loads then mostly hit.
    Indices are unsigned so that Numba emits no negative-index wraparound (it doubled the time).
    """
    n = q_out.shape[0]
    n_chunks = (n + CHUNK - 1) // CHUNK
    n_threads = max(1, min(n_threads, n_chunks))
    with_weights = w_out.shape[0] > 0
    two = np.uint32(2)
    for t in prange(n_threads):
        m = np.empty(CHUNK, np.uint32)
        for c in range(t * n_chunks // n_threads, (t + 1) * n_chunks // n_threads):
            lo = np.uint64(c * CHUNK)
            count = np.uint64(min(n, c * CHUNK + CHUNK) - c * CHUNK)
            for j in range(count):
                i3 = np.uint64(3) * (lo + j)
                k = s_r[rgb[i3]] | s_g[rgb[i3 + np.uint64(1)]] | s_b[rgb[i3 + np.uint64(2)]]
                m[j] = k
                prefetch(codes, k >> two)
            if with_weights:
                for j in range(count):
                    q = lookup(m[j], codes, palette)
                    q_out[lo + j] = q
                    w_out[lo + j] = weights[q]
            else:
                for j in range(count):
                    q_out[lo + j] = lookup(m[j], codes, palette)


def build_rgb_table(margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray, int]:
    """The category of all 2^24 8-bit colours, and how many were taken from the Zhang reference."""
    table = np.empty(N_COLOURS, dtype=np.int16)
    unsure = np.empty(N_COLOURS, dtype=np.bool_)
    build_table_kernel(LINEAR, XYZ_FROM_RGB, WHITE_D65, CATEGORY_MATRIX, CENTERS_F64, margin, table, unsure)
    idx = np.flatnonzero(unsure)
    if len(idx):
        from kernels.zhang import reference_bins  # scikit-image + SciPy, only when needed

        rgb = np.stack([idx >> 16, (idx >> 8) & 255, idx & 255], axis=-1).astype(np.uint8)
        table[idx] = reference_bins(rgb)
    if table.min() < 0 or table.max() >= Q:
        raise AssertionError("category table has entries outside [0, Q)")
    table.flags.writeable = False
    return table, len(idx)


def compress_table(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, palette) of a flat (2^24,) table; see `compress_kernel`."""
    codes = np.zeros(N_COLOURS >> 2, dtype=np.uint8)
    palette = np.zeros(N_COLOURS >> (BLOCK_BITS - 2), dtype=np.uint16)
    worst = compress_kernel(flat, codes, palette)
    if worst > 4:
        side = 1 << (BLOCK_BITS // 3)
        raise AssertionError(f"a {side}x{side}x{side} colour block holds {worst} categories; 2-bit codes need <= 4")
    codes.flags.writeable = palette.flags.writeable = False
    return codes, palette


_table: tuple[np.ndarray, np.ndarray] | None = None
_table_lock = threading.Lock()


def rgb_table() -> tuple[np.ndarray, np.ndarray]:
    """The process-wide compressed category table (codes, palette) of every 8-bit colour, 4.25 MiB.

    Built on first use (~1.5 s on 2 cores): the exact flat table, then its palette compression.
    """
    global _table
    if _table is None:
        with _table_lock:
            if _table is None:
                _table = compress_table(build_rgb_table()[0])
    return _table
