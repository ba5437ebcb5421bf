"""Per-image training targets from a decoded crop: the stored L channel and the S/4 category map.

Wang et al. (Sec. 3.1, 4.1) train on the L channel of a 224 x 224 crop and predict 313 categories at
56 x 56 (a quarter of the resolution), so the target of an output cell is the category (Eq. 7-8, made
exact by `kernels.bins.exact_bin`) of the mean (a, b) of the 4 x 4 pixels it covers. The mean is taken
in Lab, where the category borders live, in float64.
"""

import numpy as np

from kernels.bins import exact_bin
from kernels.jit import kernel, prange
from kernels.lab import lab_of

L_SCALE = 255.0 / 100.0  # the stored L is round(L * 255 / 100), uint8
BLOCK = 4  # output stride of the network: targets at S / 4


@kernel(parallel=True)
def image_targets_kernel(rgb, linear, m, white, matrix, centers, l_out, q_out, chroma_out):
    """One pass over rgb (B, S, S, 3) uint8.

    Fills l_out (B, S, S) uint8 with round(L * 255 / 100), q_out (B, S/4, S/4) int16 with the category of
    each 4 x 4 block's mean (a, b), and chroma_out (B, S/4) float64 with the sum of sqrt(a^2 + b^2) over
    each band of 4 rows (the caller reduces it to a mean chroma per image, for the grayscale test).
    """
    n_img, h, w = q_out.shape
    for t in prange(n_img * h):
        n = t // h
        i = t % h
        band = 0.0
        for j in range(w):
            sa = 0.0
            sb = 0.0
            for y in range(BLOCK * i, BLOCK * i + BLOCK):
                for x in range(BLOCK * j, BLOCK * j + BLOCK):
                    L, a, b = lab_of(rgb[n, y, x, 0], rgb[n, y, x, 1], rgb[n, y, x, 2], linear, m, white)
                    v = np.floor(L * L_SCALE + 0.5)
                    l_out[n, y, x] = np.uint8(min(max(v, 0.0), 255.0))
                    sa += a
                    sb += b
                    band += np.sqrt(a * a + b * b)
            q_out[n, i, j] = exact_bin(sa / (BLOCK * BLOCK), sb / (BLOCK * BLOCK), matrix, centers)
        chroma_out[n, i] = band
