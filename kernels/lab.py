"""sRGB (8-bit) to CIE Lab (D65, 2-degree observer), computed as scikit-image's `rgb2lab` does.

That is the convention Zhang et al.'s released code used: linearise with the sRGB curve, multiply by
scikit-image's `xyz_from_rgb` matrix, divide by the D65 white (0.95047, 1, 1.08883) and apply the CIE
cube-root curve with its linear toe (7.787 t + 16/116 below 0.008856). Arithmetic is float64 throughout;
`rgb_to_lab` rounds only its result to float32.
"""

import numpy as np

from kernels.jit import kernel, prange

# scikit-image's sRGB -> XYZ matrix and the D65 / 2-degree white point.
XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _linear_table() -> np.ndarray:
    """The sRGB decoding curve of every 8-bit value (float64 (256,)), as in scikit-image's `rgb2xyz`."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v > 0.04045, np.power((v + 0.055) / 1.055, 2.4), v / 12.92)


LINEAR = _linear_table()


def lightness(rgb: np.ndarray) -> np.ndarray:
    """L in [0, 100], float64 (...), of 8-bit sRGB (..., 3): the L of scikit-image's `rgb2lab`, without it."""
    lin = LINEAR[rgb]
    y = lin @ XYZ_FROM_RGB[1] / WHITE_D65[1]
    return np.where(y > EPSILON, 116.0 * np.cbrt(y) - 16.0, 116.0 * (7.787 * y + 16.0 / 116.0) - 16.0)


@kernel()
def _f(t):
    """The CIE Lab companding curve."""
    if t > 0.008856:
        return np.cbrt(t)
    return 7.787 * t + 16.0 / 116.0


@kernel()
def lab_of(r, g, b, linear, m, white):
    """Lab (float64 L, a, b) of one 8-bit sRGB colour."""
    lr, lg, lb = linear[r], linear[g], linear[b]
    x = _f((lr * m[0, 0] + lg * m[0, 1] + lb * m[0, 2]) / white[0])
    y = _f((lr * m[1, 0] + lg * m[1, 1] + lb * m[1, 2]) / white[1])
    z = _f((lr * m[2, 0] + lg * m[2, 1] + lb * m[2, 2]) / white[2])
    return 116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)


EPSILON = 0.008856  # CIE: the cube root applies above this, the linear toe below
_F = np.float32
_EPS32, _TOE_K, _TOE_C, _THIRD, _FOUR = _F(EPSILON), _F(7.787), _F(16.0 / 116.0), _F(1.0 / 3.0), _F(4.0)
# float32 bit pattern whose third, subtracted, gives ~1/cbrt(t) to a few percent (the "fast inverse root" trick).
_INV_CBRT_MAGIC = np.uint32(0x54A2FA8C)


@kernel()
def companding32_into(t, out):
    """out[p] = f(t[p]), the CIE Lab curve, for a float32 array t >= 0, in three passes that LLVM vectorises.

    The cube root is the bit-level guess of t^(-1/3) refined by three division-free Newton steps,
    r <- r (4 - t r^3) / 3, then cbrt(t) = t r^2: within 4.2e-7 (relative) of libm's cbrt, float32 throughout.
    """
    n = t.shape[0]
    for p in range(n):
        out[p] = max(t[p], _EPS32)
    bits = out.view(np.uint32)
    for p in range(n):
        bits[p] = _INV_CBRT_MAGIC - bits[p] // np.uint32(3)
    for p in range(n):
        x = max(t[p], _EPS32)
        r = out[p]
        for _ in range(3):
            r = r * (_FOUR - x * r * r * r) * _THIRD
        out[p] = x * r * r if t[p] > _EPS32 else _TOE_K * t[p] + _TOE_C


@kernel(parallel=True)
def rgb_to_lab_kernel(rgb, linear, m, white, out):
    """Fill out (N, 3) float32 with the Lab of rgb (N, 3) uint8."""
    for i in prange(rgb.shape[0]):
        L, a, b = lab_of(rgb[i, 0], rgb[i, 1], rgb[i, 2], linear, m, white)
        out[i, 0] = L
        out[i, 1] = a
        out[i, 2] = b
