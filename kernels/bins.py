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
  per colour, block after block (`colour_index`, 4 MiB), plus a 4-entry palette per block (256 KiB), 4.25 MiB
  instead of 32 (`rgb_table`). For a weight vector the palette is widened once into (category, weight)
  pairs (`pair_table`, 1 MiB), so that the gather (`gather`) needs two table loads per pixel, over chunks of
  `CHUNK` pixels: AVX-512 gathers on CPUs that have them, scalar loads elsewhere (docs/categories.md).
"""

import threading

import numpy as np

from kernels.gamut import A_MIN, B_MIN, CATEGORY_MATRIX, CELL_CANDIDATES, CENTERS_F64, GRID, N_A, N_B, NEAR_MARGIN, Q
from kernels.jit import kernel, prange
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


BLOCK_BITS = 9  # a palette block is 8 x 8 x 8 colours (the low 3 bits of r, g and b)
CODES_PER_WORD = 16  # 2-bit codes in a uint32 word
CHUNK = 2048  # pixels per pass of `gather` (its index and code arrays stay in L1)
_U3, _U5, _U7, _U9, _U10 = (np.uint32(v) for v in (3, 5, 7, 9, 10))


@kernel()
def colour_index(r, g, b):
    """Block-major index of a uint32 colour: its 8x8x8 block (r >> 3, g >> 3, b >> 3) in the high 15 bits,
    its place in the block (r & 7, g & 7, b & 7) in the low 9."""
    block = ((r >> _U3) << _U10) | ((g >> _U3) << _U5) | (b >> _U3)
    return (block << _U9) | ((r & _U7) << np.uint32(6)) | ((g & _U7) << _U3) | (b & _U7)


@kernel(parallel=True)
def compress_kernel(flat, codes, palette):
    """Palette-compress the flat table: per 8x8x8 block, <= 4 categories and a 2-bit code per colour.

    flat (2^24,) int16 indexed r << 16 | g << 8 | b; fills codes (2^20,) uint32 (sixteen 2-bit codes a word,
    in `colour_index` order) and palette (2^15 * 4,) uint16 (unused slots repeat the block's last category).
    Returns the largest number of categories met in one block (> 4 means the layout cannot hold the table).
    """
    n_blocks = palette.shape[0] // 4
    worst = np.zeros(n_blocks, dtype=np.int64)
    for blk in prange(n_blocks):
        r0, g0, b0 = (blk >> 10) << 3, ((blk >> 5) & 31) << 3, (blk & 31) << 3
        n = 0
        for j in range(1 << BLOCK_BITS):
            q = flat[((r0 | (j >> 6)) << 16) | ((g0 | ((j >> 3) & 7)) << 8) | (b0 | (j & 7))]
            c = 0
            while c < n and palette[4 * blk + c] != q:
                c += 1
            if c == n:
                if n < 4:
                    palette[4 * blk + n] = q
                n += 1
            if c < 4:
                m = (blk << BLOCK_BITS) | j
                codes[m // CODES_PER_WORD] |= np.uint32(c) << np.uint32(2 * (m % CODES_PER_WORD))
        for c in range(min(n, 4), 4):
            palette[4 * blk + c] = palette[4 * blk + min(n, 4) - 1]
        worst[blk] = n
    return worst.max()


@kernel(parallel=True)
def pair_kernel(palette, weights, pairs):
    """pairs[i] = palette[i] | bits(weights[palette[i]]) << 32: a palette entry with its weight (Eq. 2)."""
    bits = weights.view(np.uint32)
    for i in prange(palette.shape[0]):
        pairs[i] = np.uint64(palette[i]) | (np.uint64(bits[palette[i]]) << np.uint64(32))


@kernel(parallel=True)
def gather(rgb, codes, pairs, q_out, w_out, n_threads):
    """Fill q_out (N,) uint16 with the category of each colour of rgb (3N,) uint8 (r, g, b, r, ...) and, unless
    w_out is empty, w_out (N,) uint32 with the bits of its float32 weight (Eq. 2). codes: `rgb_table`'s;
    pairs: `pair_table`'s (uint64: category | weight bits << 32).

    Each of n_threads threads walks a contiguous range in chunks of CHUNK pixels, in three loops: the
    block-major indices (no table; vectorised), the 2-bit codes, then the (category, weight) pairs. With
    AVX-512 LLVM turns the last two into a 16-lane gather of code words and a gather of 64-bit entries; on
    CPUs without it they are scalar loads. Indices are unsigned and masked to their range, so that Numba emits
    no wraparound checks and the gathers take 32-bit lanes. Three loops, not one: a fused loop is not
    vectorised as well (docs/categories.md).
    """
    n = q_out.shape[0]
    n_chunks = (n + CHUNK - 1) // CHUNK
    n_threads = max(1, min(n_threads, n_chunks))
    with_weights = w_out.shape[0] > 0
    for t in prange(n_threads):
        m = np.empty(CHUNK, np.uint32)
        c = np.empty(CHUNK, np.uint32)
        for ch in range(t * n_chunks // n_threads, (t + 1) * n_chunks // n_threads):
            lo = np.uint64(ch * CHUNK)
            count = np.uint64(min(n, ch * CHUNK + CHUNK) - ch * CHUNK)
            for j in range(count):
                i3 = np.uint64(3) * (lo + j)
                r, g, b = np.uint32(rgb[i3]), np.uint32(rgb[i3 + np.uint64(1)]), np.uint32(rgb[i3 + np.uint64(2)])
                m[j] = colour_index(r, g, b)
            for j in range(count):
                k = m[j] & np.uint32(0xFFFFFF)
                c[j] = (codes[k >> np.uint32(4)] >> ((k & np.uint32(15)) << np.uint32(1))) & np.uint32(3)
            if with_weights:
                for j in range(count):
                    e = pairs[(((m[j] & np.uint32(0xFFFFFF)) >> _U9) << np.uint32(2)) | (c[j] & np.uint32(3))]
                    q_out[lo + j] = np.uint16(e & np.uint64(0xFFFF))
                    w_out[lo + j] = np.uint32(e >> np.uint64(32))
            else:
                for j in range(count):
                    e = pairs[(((m[j] & np.uint32(0xFFFFFF)) >> _U9) << np.uint32(2)) | (c[j] & np.uint32(3))]
                    q_out[lo + j] = np.uint16(e & np.uint64(0xFFFF))


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


HUGE_PAGE = 2 << 20


def huge_page_copy(a: np.ndarray) -> np.ndarray:
    """A read-only copy of a in 2 MiB-aligned anonymous memory advised for transparent huge pages (Linux).

    The gather's random loads span the 4 MiB code table: in 4 KiB pages that is 1,024 TLB entries, and where
    numpy's own allocation put the table decided whether part of it got huge pages (docs/categories.md).
    """
    import mmap

    if not hasattr(mmap, "MADV_HUGEPAGE") or a.nbytes == 0:
        out = a.copy()
    else:
        span = -(-a.nbytes // HUGE_PAGE) * HUGE_PAGE
        region = mmap.mmap(-1, span + HUGE_PAGE)
        offset = (-np.frombuffer(region, np.uint8, 1).ctypes.data) % HUGE_PAGE
        region.madvise(mmap.MADV_HUGEPAGE, offset, span)
        out = np.frombuffer(region, a.dtype, a.size, offset).reshape(a.shape)  # keeps region alive
        out[...] = a
    out.flags.writeable = False
    return out


def compress_table(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, palette) of a flat (2^24,) table; see `compress_kernel`."""
    codes = np.zeros(N_COLOURS // CODES_PER_WORD, dtype=np.uint32)
    palette = np.zeros(N_COLOURS >> (BLOCK_BITS - 2), dtype=np.uint16)
    worst = compress_kernel(flat, codes, palette)
    if worst > 4:
        side = 1 << (BLOCK_BITS // 3)
        raise AssertionError(f"a {side}x{side}x{side} colour block holds {worst} categories; 2-bit codes need <= 4")
    palette.flags.writeable = False
    return huge_page_copy(codes), palette


_table: tuple[np.ndarray, np.ndarray] | None = None
_pairs: dict[bytes, np.ndarray] = {}
_table_lock = threading.Lock()
_PAIR_CACHE = 8  # weight vectors whose pair tables are kept (1 MiB each)


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


def pair_table(weights: np.ndarray | None) -> np.ndarray:
    """The palette with each entry's weight beside it, uint64 (2^17,) (`pair_kernel`), for float32 (Q,)
    weights (None: zero weights, for categories alone). The last few weight vectors' tables are kept."""
    w = np.zeros(Q, np.float32) if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    key = w.tobytes()
    pairs = _pairs.get(key)
    if pairs is None:
        palette = rgb_table()[1]
        pairs = np.empty(len(palette), np.uint64)
        pair_kernel(palette, w, pairs)
        pairs = huge_page_copy(pairs)
        with _table_lock:
            while len(_pairs) >= _PAIR_CACHE:
                _pairs.pop(next(iter(_pairs)))
            _pairs[key] = pairs
    return pairs
