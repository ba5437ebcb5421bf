"""Per-image training targets from a decoded crop: the stored L channel and the S/4 category map.

Wang et al. (Sec. 3.1, 4.1) train on the L channel of a 224 x 224 crop and predict 313 categories at
56 x 56 (a quarter of the resolution), so the target of an output cell is the category (Eq. 7-8, made
exact by `kernels.bins.exact_bin`) of the mean (a, b) of the 4 x 4 pixels it covers. The mean is taken
in Lab, where the category borders live.

The kernel works on one band of 4 rows at a time, in float32 passes that LLVM vectorises (linear RGB ->
XYZ / white, the companding curve by a division-free Newton cube root, L, the block sums), and settles in
float64 what float32 cannot: a pixel whose L * 2.55 lies within L_MARGIN of a rounding boundary, and a block
whose mean (a, b) lies within AB_MARGIN of a cell border (or in a cell without a center) are recomputed from
`kernels.lab.lab_of`, scikit-image's float64 arithmetic. The margins hold the float32 error with room to spare:
tests/kernels/test_exhaustive.py measures it on all 2^24 colours (L * 2.55 within 1.1e-4 of float64, a within
2.6e-4, b within 1.1e-4, so a block mean within 2.6e-4) and checks L and the bins of every colour against
scikit-image. Few pixels and blocks of real photos take the float64 path (docs/categories.md).
"""

import numpy as np

from kernels.bins import exact_bin
from kernels.gamut import A_MIN, B_MIN, GRID, N_A, N_B
from kernels.jit import kernel, prange
from kernels.lab import companding32_into, lab_of

L_SCALE = 255.0 / 100.0  # the stored L is round(L * 255 / 100), uint8
BLOCK = 4  # output stride of the network: targets at S / 4
L_MARGIN = 2e-3  # in units of L * 2.55: closer to a rounding boundary, a pixel's L is recomputed in float64
AB_MARGIN = 2e-2  # Lab units: a block mean closer to a cell border is recomputed in float64

_F = np.float32
_L_A, _L_B, _L_HALF = _F(116.0 * L_SCALE), _F(-16.0 * L_SCALE), _F(0.5)
_LO, _HI = _F(L_MARGIN), _F(1.0 - L_MARGIN)


@kernel()
def _cell(ma, mb, matrix):
    """The category of the cell that (ma, mb) rounds into (Eq. 7-8), or -1 when that is not certain from a
    float32-accurate mean: within AB_MARGIN of a cell border, outside the grid, or a cell without a center."""
    u = ma / GRID + 0.5
    v = mb / GRID + 0.5
    fu = np.floor(u)
    fv = np.floor(v)
    row = int(fu) - A_MIN // GRID
    col = int(fv) - B_MIN // GRID
    near = GRID * min(u - fu, 1.0 - (u - fu), v - fv, 1.0 - (v - fv))
    if near < AB_MARGIN or row < 0 or row >= N_A or col < 0 or col >= N_B:
        return -1
    return matrix[row, col]


@kernel(parallel=True)
def image_targets_kernel(rgb, lin32, m32, linear, m, white, matrix, centers, l_out, q_out, chroma_out):
    """One pass over rgb (B, H, W, 3) uint8. lin32, m32: the sRGB curve and the RGB -> XYZ matrix with rows
    divided by the white, float32; linear, m, white: the float64 originals, for the recomputed pixels.

    Fills l_out (B, H, W) uint8 with round(L * 255 / 100), q_out (B, H/4, W/4) int16 with the category of
    each 4 x 4 block's mean (a, b), and chroma_out (B, H/4) float64 with the sum of the block means' chroma
    sqrt(a^2 + b^2) over each band of 4 rows (reduced by the caller to a mean per image: the grayscale test).
    """
    n_img, h, w = q_out.shape
    width = rgb.shape[2]
    size = BLOCK * width  # pixels in a band, p = dy * width + x
    for n in prange(n_img):
        t = np.empty((3, size), np.float32)
        f = np.empty((3, size), np.float32)
        near = np.empty(size, np.bool_)
        for i in range(h):
            for dy in range(BLOCK):
                row = rgb[n, BLOCK * i + dy]
                for x in range(width):
                    p = dy * width + x
                    r, g, b = lin32[row[x, 0]], lin32[row[x, 1]], lin32[row[x, 2]]
                    for c in range(3):
                        t[c, p] = r * m32[c, 0] + g * m32[c, 1] + b * m32[c, 2]
            for c in range(3):
                companding32_into(t[c], f[c])
            for dy in range(BLOCK):
                out = l_out[n, BLOCK * i + dy]
                for x in range(width):
                    v = f[1, dy * width + x] * _L_A + (_L_B + _L_HALF)
                    fl = np.floor(v)
                    near[dy * width + x] = (v - fl < _LO) | (v - fl > _HI)
                    out[x] = np.uint8(min(max(fl, _F(0.0)), _F(255.0)))
            for p in range(size):
                if near[p]:  # about 1 pixel in 250: float64, as scikit-image
                    y, x = BLOCK * i + p // width, p % width
                    L = lab_of(rgb[n, y, x, 0], rgb[n, y, x, 1], rgb[n, y, x, 2], linear, m, white)[0]
                    l_out[n, y, x] = np.uint8(min(max(np.floor(L * L_SCALE + 0.5), 0.0), 255.0))
            band = 0.0
            for j in range(w):
                sa = 0.0
                sb = 0.0
                for dy in range(BLOCK):
                    for dx in range(BLOCK):
                        p = dy * width + BLOCK * j + dx
                        sa += np.float64(_F(500.0) * (f[0, p] - f[1, p]))
                        sb += np.float64(_F(200.0) * (f[1, p] - f[2, p]))
                ma = sa / (BLOCK * BLOCK)
                mb = sb / (BLOCK * BLOCK)
                q = _cell(ma, mb, matrix)
                if q < 0:  # near a border: the block's mean in float64, as scikit-image
                    sa = 0.0
                    sb = 0.0
                    for dy in range(BLOCK):
                        for dx in range(BLOCK):
                            y, x = BLOCK * i + dy, BLOCK * j + dx
                            _, a, b = lab_of(rgb[n, y, x, 0], rgb[n, y, x, 1], rgb[n, y, x, 2], linear, m, white)
                            sa += a
                            sb += b
                    ma = sa / (BLOCK * BLOCK)
                    mb = sb / (BLOCK * BLOCK)
                    q = exact_bin(ma, mb, matrix, centers)
                q_out[n, i, j] = q
                band += np.sqrt(ma * ma + mb * mb)
            chroma_out[n, i] = band
