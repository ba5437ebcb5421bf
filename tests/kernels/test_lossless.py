"""The lossless image coder of the store's L (`kernels.lossless` and its model, `kernels.lossless_model`): exact
round trips, its tables, bad streams."""

import numpy as np
import pytest

from kernels import lossless
from kernels.jit import python_version
from kernels.lossless_model import (
    ACT_MAX,
    ACT_THRESHOLDS,
    CODE_WEIGHT,
    CTX_OF_ACTIVITY,
    EXTRA_BITS,
    TOKEN_BASE,
    TOKEN_OF,
)


def synthetic(shape: tuple[int, int], kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = shape
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "flat":
        return np.full(shape, 77, np.uint8)
    if kind == "ramp":
        return (np.add.outer(np.arange(rows), 3 * np.arange(cols)) % 256).astype(np.uint8)
    if kind == "checker":  # 0 / 255 neighbours: residuals at the wrap-around limits
        return (255 * (np.add.outer(np.arange(rows), np.arange(cols)) % 2)).astype(np.uint8)
    raise ValueError(kind)


def roundtrip(img: np.ndarray) -> bytes:
    data = lossless.encode(img)
    np.testing.assert_array_equal(lossless.decode(data, *img.shape), img)
    return data


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 2), (3, 3), (17, 33), (224, 224)])
@pytest.mark.parametrize("kind", ["noise", "flat", "ramp", "checker"])
def test_roundtrip_synthetic(shape, kind):
    roundtrip(synthetic(shape, kind))


def test_roundtrip_photos_and_smaller_than_delta_zstd(photos):
    import numcodecs

    from kernels import image_targets

    L = image_targets(photos)[0]  # (8, 96, 96): the stored L of real crops
    ours = sum(len(roundtrip(x)) for x in L)
    zstd = numcodecs.Zstd(level=1)
    delta = sum(len(zstd.encode(np.diff(x.reshape(-1), prepend=np.uint8(0)).astype(np.uint8))) for x in L)
    assert ours < 0.95 * delta  # 27.9 vs 31.5 kB at 224 on ImageNet (docs/store.md)


def test_noise_costs_at_most_one_percent_more_than_raw():
    img = synthetic((224, 224), "noise")
    assert len(roundtrip(img)) <= 1.01 * img.size + 400


def test_compiled_and_python_kernels_write_the_same_stream():
    img = synthetic((6, 7), "noise", seed=3) // 3 + synthetic((6, 7), "ramp")
    n = img.size
    streams = []
    for kernel in (lossless.encode_kernel, python_version(lossless.encode_kernel)):
        out = np.zeros(lossless.max_encoded_bytes(6, 7), np.uint8)
        scratch = np.empty(n, np.uint8), np.empty(n, np.uint16), np.empty(n, np.uint16)
        length = kernel(img, out, CODE_WEIGHT, TOKEN_OF, EXTRA_BITS, CTX_OF_ACTIVITY, *scratch)
        streams.append(out[:length].tobytes())
    assert streams[0] == streams[1]
    back = np.empty_like(img)
    args = (CODE_WEIGHT, EXTRA_BITS, TOKEN_BASE, CTX_OF_ACTIVITY)
    assert python_version(lossless.decode_kernel)(np.frombuffer(streams[0], np.uint8), back, *args) == 0
    np.testing.assert_array_equal(back, img)


def test_tables():
    for u in range(256):  # every residual is its token's base plus its raw bits
        t = TOKEN_OF[u]
        assert TOKEN_BASE[t] <= u < TOKEN_BASE[t] + (1 << EXTRA_BITS[t])
        assert (u - TOKEN_BASE[t]) < (1 << EXTRA_BITS[t])
    act = np.arange(ACT_MAX + 1)
    np.testing.assert_array_equal(CTX_OF_ACTIVITY, sum((act >= th).astype(int) for th in ACT_THRESHOLDS))


def test_bad_streams_raise_and_never_crash():
    img = synthetic((40, 50), "ramp") + synthetic((40, 50), "noise") // 8
    data = roundtrip(img)
    for cut in (0, 1, 8, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError, match="malformed"):
            lossless.decode(data[:cut], 40, 50)
    with pytest.raises(ValueError, match="malformed"):
        lossless.decode(data, 50, 40)  # another shape
    rng = np.random.default_rng(0)
    for _ in range(200):  # a flipped bit is reported or decodes to some image, never reads out of bounds
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        try:
            lossless.decode(bytes(bad), 40, 50)
        except ValueError:
            pass


def test_encode_checks_its_input():
    with pytest.raises(TypeError, match="2-D uint8"):
        lossless.encode(np.zeros((4, 4), np.int16))
    with pytest.raises(TypeError, match="2-D uint8"):
        lossless.encode(np.zeros((2, 4, 4), np.uint8))
