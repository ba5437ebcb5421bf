"""Each array's codec chain, both ways: what `ArrayCodecs` encodes it decodes bit for bit, within the bound the
reader checks every chunk against, and damaged bytes fail in the two error types the reader turns into StoreError."""

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.store.arrays import IMAGE_CHAIN, ZSTD_CHAIN, ArrayCodecs, array_codecs, crc_ok
from pipeline.store.shards import array_specs

ARRAYS = [(name, l_codec) for name in ("L", "bins", "label") for l_codec in ("med_rans", "zstd")]


def image_of(name: str, size: int, rng, smooth: bool) -> np.ndarray:
    tail, dtype = array_specs(size)[name]
    if name == "label":
        return np.array(rng.integers(-1, 1000), dtype=dtype)
    high = 256 if name == "L" else 313
    if smooth:  # what photos look like to a predictor: long runs of near values
        return np.cumsum(rng.integers(-1, 2, tail), axis=-1).clip(0, high - 1).astype(dtype)
    return rng.integers(0, high, tail).astype(dtype)


@pytest.mark.parametrize("name,l_codec", ARRAYS)
@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([8, 32, 64]), smooth=st.booleans())
def test_what_is_encoded_decodes_to_the_same_image_within_the_bound(name, l_codec, seed, size, smooth):
    rng = np.random.default_rng(seed)
    image = image_of(name, size, rng, smooth)
    codecs = array_codecs(name, image.dtype, 1, l_codec)
    chunk = codecs.encode(image)
    assert crc_ok(chunk) and len(chunk) <= codecs.max_chunk(image.shape)
    out = np.full_like(image, 7)
    codecs.decode(chunk, out, zstandard.ZstdDecompressor())
    assert np.array_equal(out, image) and out.dtype == image.dtype


@pytest.mark.parametrize("name,l_codec", ARRAYS)
def test_the_reader_finds_the_writers_codecs_from_the_chain_zarr_records(name, l_codec):
    codecs = array_codecs(name, array_specs(32)[name][1], 3, l_codec)
    assert codecs.chain == (IMAGE_CHAIN if name == "L" and l_codec == "med_rans" else ZSTD_CHAIN)
    found = ArrayCodecs.of_chain(codecs.chain, codecs.dtype)
    assert (found.dtype, found.image) == (codecs.dtype, codecs.image)
    assert ArrayCodecs.of_chain(("bytes", "gzip", "crc32c"), codecs.dtype) is None


@pytest.mark.parametrize("name,l_codec", ARRAYS)
@pytest.mark.parametrize("damage", ["cut", "empty", "longer", "garbage"])
def test_bytes_that_are_not_one_image_fail_as_value_or_zstd_errors(name, l_codec, damage):
    rng = np.random.default_rng(1)
    image = image_of(name, 32, rng, smooth=True)
    codecs = array_codecs(name, image.dtype, 1, l_codec)
    payload = codecs.encode(image)[:-4]
    other = codecs.encode(np.concatenate([image.reshape(-1)] * 2))[:-4] if image.ndim else b"\x00" * 64
    bad = {"cut": payload[: len(payload) // 2], "empty": b"", "longer": other, "garbage": bytes(rng.bytes(40))}[damage]
    out = np.zeros_like(image)
    with pytest.raises((ValueError, zstandard.ZstdError)):
        codecs.decode(bad + b"\0\0\0\0", out, zstandard.ZstdDecompressor())


def test_a_read_of_some_arrays_fetches_and_decodes_those_alone(tiny_store):
    from pipeline.store.reader import ShardReader

    reader = ShardReader(tiny_store[0])
    asked = []
    gather = reader.files.gather
    reader.files.gather = lambda requests, whole: asked.extend(r.key for r in requests) or gather(requests, whole)
    idx = np.array([5, 0, 5, 11])
    only = reader.read(idx, ("L",))
    assert list(only) == ["L"] and asked and all(k.startswith("L/") for k in asked)
    assert np.array_equal(only["L"], reader.read(idx)["L"])
