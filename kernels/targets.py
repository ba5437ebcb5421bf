"""Per-image training targets from a decoded crop: the stored L channel and the S/4 category map.

Wang et al. (Sec. 3.1, 4.1) train on the L channel of a 224 x 224 crop and predict 313 categories at
56 x 56 (a quarter of the resolution), so the target of an output cell is the category (Eq. 7-8, made
exact by `kernels.bins.exact_bin`) of the mean (a, b) of the 4 x 4 pixels it covers. The mean is taken
in Lab, where the category borders live, in float64.

The kernel works on one band of 4 rows at a time, in passes that LLVM vectorises: linear RGB -> XYZ / white,
the companding curve (`kernels.lab.companding_into`), then L and the block sums. It equals scikit-image's
`rgb2lab` followed by the same rounding and block mean on every tested photo (tests/kernels/test_targets.py).
"""

import numpy as np

from kernels.bins import exact_bin
from kernels.jit import kernel, prange
from kernels.lab import companding_into

L_SCALE = 255.0 / 100.0  # the stored L is round(L * 255 / 100), uint8
BLOCK = 4  # output stride of the network: targets at S / 4


@kernel(parallel=True)
def image_targets_kernel(rgb, linear, m_white, matrix, centers, l_out, q_out, chroma_out):
    """One pass over rgb (B, H, W, 3) uint8; m_white: the RGB -> XYZ matrix with rows divided by the white.

    Fills l_out (B, H, W) uint8 with round(L * 255 / 100), q_out (B, H/4, W/4) int16 with the category of
    each 4 x 4 block's mean (a, b), and chroma_out (B, H/4) float64 with the sum of the block means' chroma
    sqrt(a^2 + b^2) over each band of 4 rows (reduced by the caller to a mean per image: the grayscale test).
    """
    n_img, h, w = q_out.shape
    width = rgb.shape[2]
    size = BLOCK * width  # pixels in a band, p = dy * width + x
    for n in prange(n_img):
        xyz = np.empty((3, size))
        f = np.empty((3, size))
        scratch = np.empty(size, dtype=np.float32)
        for i in range(h):
            for dy in range(BLOCK):
                for x in range(width):
                    p = dy * width + x
                    r = linear[rgb[n, BLOCK * i + dy, x, 0]]
                    g = linear[rgb[n, BLOCK * i + dy, x, 1]]
                    b = linear[rgb[n, BLOCK * i + dy, x, 2]]
                    for c in range(3):
                        xyz[c, p] = r * m_white[c, 0] + g * m_white[c, 1] + b * m_white[c, 2]
            for c in range(3):
                companding_into(xyz[c], f[c], scratch)
            for dy in range(BLOCK):
                for x in range(width):
                    v = np.floor((116.0 * f[1, dy * width + x] - 16.0) * L_SCALE + 0.5)
                    l_out[n, BLOCK * i + dy, x] = np.uint8(min(max(v, 0.0), 255.0))
            band = 0.0
            for j in range(w):
                sa = 0.0
                sb = 0.0
                for dy in range(BLOCK):
                    for dx in range(BLOCK):
                        p = dy * width + BLOCK * j + dx
                        a = 500.0 * (f[0, p] - f[1, p])
                        b = 200.0 * (f[1, p] - f[2, p])
                        sa += a
                        sb += b
                ma = sa / (BLOCK * BLOCK)
                mb = sb / (BLOCK * BLOCK)
                q_out[n, i, j] = exact_bin(ma, mb, matrix, centers)
                band += np.sqrt(ma * ma + mb * mb)
            chroma_out[n, i] = band
