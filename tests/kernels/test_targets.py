import numpy as np
import pytest
from skimage.color import rgb2lab

from kernels import encode_ab, encode_bins, image_targets
from kernels.lab import lightness


def test_L_and_block_bins_match_scikit_image(photos):
    L, q, chroma = image_targets(photos)
    lab = rgb2lab(photos)
    assert np.array_equal(L, np.floor(lab[..., 0] * 255 / 100 + 0.5).astype(np.uint8))
    n, s = photos.shape[:2]
    ab = lab[..., 1:].reshape(n, s // 4, 4, s // 4, 4, 2).mean(axis=(2, 4))  # (B, S/4, S/4, 2)
    assert np.array_equal(q, encode_ab(ab))
    assert np.allclose(chroma, np.hypot(ab[..., 0], ab[..., 1]).mean(axis=(1, 2)))


def test_lightness_is_scikit_images_L_without_it(photos, all_colours):
    for rgb in (photos, all_colours[::61]):  # colorize's full-resolution L (the core install has no scikit-image)
        assert np.abs(lightness(rgb) - rgb2lab(rgb)[..., 0]).max() < 1e-9


def test_uniform_blocks_give_the_pixel_category(photos):
    coarse = photos[:, ::4, ::4]
    big = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)  # every 4x4 block one colour
    _, q, _ = image_targets(big)
    assert np.array_equal(q, encode_bins(coarse))


def test_gray_image_has_zero_chroma_and_neutral_bins():
    gray = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)[:, :256]
    img = np.repeat(gray, 8, axis=0)[None]  # (1, 8, 256, 3)
    L, q, chroma = image_targets(img)
    assert chroma[0] < 0.01 and (q == 120).all() and L[0, 0, -1] == 255 and L[0, 0, 0] == 0


def test_bad_input_raises():
    with pytest.raises(TypeError):
        image_targets(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="divisible"):
        image_targets(np.zeros((1, 6, 8, 3), np.uint8))


def test_companding_matches_libm_cube_root():
    from kernels.lab import EPSILON, companding32_into

    t = np.concatenate([np.linspace(0, 1.01, 1_000_001), [EPSILON, np.nextafter(EPSILON, 1)]]).astype(np.float32)
    out = np.empty_like(t)
    companding32_into(t, out)
    t64 = t.astype(np.float64)
    want = np.where(t64 > np.float32(EPSILON), np.cbrt(t64), 7.787 * t64 + 16 / 116)
    assert np.max(np.abs(out - want) / want) < 5e-7  # measured 4.2e-7: float32 rounding, not the iteration
