import numpy as np
import pytest

from pipeline.decode import Cropper, pil_decode, probe
from tests.corpus import EXPECTED, make

pytestmark = pytest.mark.dali


@pytest.fixture(scope="module")
def cropper():
    return Cropper(64, 8, "cpu")


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_every_awkward_file_is_stored_or_refused_by_the_probe(kind, cropper):
    data = make(kind, np.random.default_rng(0))
    info = probe(data)
    expected = EXPECTED[kind]
    if expected in ("stored", "grayscale"):
        assert info.reason is None
        assert info.grayscale == (expected == "grayscale")
        rgb, decoder, err = cropper.crops([data])[0]
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8, err
    else:
        assert (
            info.reason is not None
            and info.reason.split()[0]
            in {
                "truncated": ("truncated",),
                "empty": ("empty",),
                "not_image": ("not",),
                "bomb": ("decompression",),
            }[expected]
        )


def test_one_bad_image_does_not_cost_the_batch(cropper, photos):
    import io

    from PIL import Image

    good = []
    for img in photos[:3]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=95)
        good.append(buf.getvalue())
    bad = b"\xff\xd8\xff\xe0garbage that claims to be a JPEG"
    out = cropper.crops([good[0], bad, good[1], good[2]])
    assert [o[0] is not None for o in out] == [True, False, True, True]
    assert "DALI" in out[1][2] and "Pillow" in out[1][2]
    alone = [cropper.crops([g])[0][0] for g in good]
    for o, a in zip([out[0], out[2], out[3]], alone, strict=True):
        assert np.array_equal(o[0], a)  # batch composition does not change a crop


def test_exif_orientation_applied_like_pillow(cropper):
    data = make("exif_rotated", np.random.default_rng(3))
    dali = cropper.crops([data])[0][0].astype(int)
    pil = cropper.crop_decoded(pil_decode(data)).astype(int)
    upright = cropper.crop_decoded(np.rot90(pil_decode(data), 1)).astype(int)
    assert np.abs(dali - pil).mean() < 3 < np.abs(dali - upright).mean()


def test_center_crop_of_shorter_side(cropper):
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # the middle third is white: it fills the whole center crop
    out = cropper.crop_decoded(img)
    assert out.shape == (64, 64, 3)
    assert out[:, 8:-8].min() == 255 and out.mean() > 240


def test_16_bit_gray_keeps_the_top_byte():
    import io

    from PIL import Image

    arr = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    rgb = pil_decode(buf.getvalue())
    assert np.array_equal(rgb[..., 0], np.arange(256).reshape(16, 16))


def test_truncation_check_is_the_last_scan_before_the_last_end_marker():
    """`_jpeg_truncated` equals its definition (last SOS < last EOI) on byte strings dense in both markers."""
    from pipeline.decode import _jpeg_truncated

    rng = np.random.default_rng(0)
    for _ in range(3000):
        data = bytes(rng.choice([0x00, 0xFF, 0xDA, 0xD9, 0xD8], size=rng.integers(0, 24)).astype(np.uint8))
        sos, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
        assert _jpeg_truncated(data) == (sos < 0 or eoi < sos), data
