"""The store's chunks and shards as bytes: encoded once per image, assembled into Zarr v3 shard files.

Every per-image array of the store (docs/store.md) has one image per chunk, so an image's encoded chunk does
not depend on where the image lands in the store. The part task encodes its images (`encode_images`) and
stages the bytes; a shard file is then the concatenation of its chunks and the sharding index
(`shard_file`). No chunk goes through zarr-python's codec pipeline on the write path, whose per-chunk
overhead was a fifth of an image's cost (docs/store.md).

The codecs are declared once (`ArrayCodecs`): zarr gets them when the arrays are created (`zarr_codecs`), so
that plain zarr reads what is written here, and `encode` produces the same bytes zarr-python would write
(tests/pipeline/store/test_chunks.py compares whole shard files with zarr's own).
"""

from dataclasses import dataclass
from functools import cached_property

import google_crc32c
import numcodecs
import numpy as np

EMPTY = np.uint64(2**64 - 1)  # offset and length of an absent chunk in a sharding index


def index_bytes(per_shard: int) -> int:
    """Bytes of a shard's index: an (offset, length) pair of uint64 per chunk, then its crc32c."""
    return 16 * per_shard + 4


def crc32c(data) -> bytes:
    """The 4 bytes zarr's `crc32c` codec appends: CRC-32C of data, little endian."""
    return int(google_crc32c.value(data)).to_bytes(4, "little")


@dataclass(frozen=True)
class ArrayCodecs:
    """The codec chain of one per-image array: either the lossless image codec (`pipeline.store.codec`, for L) or
    bytes (little endian) + zstd, codecs of the Zarr v3 specification; then crc32c.

    image: L's chain, `colorize.med_rans` (MED prediction + context-modelled rANS, `pipeline.store.codec`).
    """

    dtype: str
    level: int
    image: bool = False

    @cached_property
    def _little(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")

    def zarr_codecs(self) -> dict:
        """`serializer` and `compressors` for `zarr.Group.create_array`."""
        from zarr.codecs import Crc32cCodec, ZstdCodec

        if self.image:
            return {"serializer": self._image_codec, "compressors": [Crc32cCodec()]}
        return {"compressors": [ZstdCodec(level=self.level), Crc32cCodec()]}

    @cached_property
    def _zstd(self) -> numcodecs.Zstd:
        return numcodecs.Zstd(level=self.level)

    @cached_property
    def _image_codec(self):
        from pipeline.store.codec import MedRansCodec

        return MedRansCodec()

    def encode(self, image: np.ndarray) -> bytes:
        """The bytes of one chunk (one image) as zarr stores them."""
        if self.image:
            packed = self._image_codec.encode_array(image)
        else:
            packed = bytes(self._zstd.encode(np.ascontiguousarray(image, dtype=self._little).reshape(-1)))
        return packed + crc32c(packed)


L_CODECS = ("med_rans", "zstd")  # L's codec: this package's image codec, or the Zarr v3 specification's zstd


def array_codecs(name: str, dtype, level: int, l_codec: str = "med_rans") -> ArrayCodecs:
    """The codecs of the store's array `name`: the lossless image codec on L (unless `l_codec` is zstd), zstd on
    the others (`l_codec` is validated with the rest of the settings, `PreprocessConfig`)."""
    return ArrayCodecs(dtype=np.dtype(dtype).name, level=level, image=name == "L" and l_codec == "med_rans")


def encode_images(codecs: ArrayCodecs, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blob uint8, sizes int64): the encoded chunks of images[0], images[1], ... concatenated, and their lengths."""
    chunks = [codecs.encode(x) for x in images]
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), sizes


def shard_file(chunks: list, chunks_per_shard: int) -> bytes:
    """A whole shard file: the shard's chunks in order (bytes-like, or None for an absent chunk; at most
    chunks_per_shard of them, the rest absent), then the index.

    The index (sharding codec, `index_location` end): one (offset, length) uint64 pair per chunk in C order,
    (2^64 - 1, 2^64 - 1) for an absent chunk, little endian, followed by its own crc32c.
    """
    if len(chunks) > chunks_per_shard:
        raise ValueError(f"{len(chunks)} chunks do not fit a shard of {chunks_per_shard}")
    index = np.full((chunks_per_shard, 2), EMPTY, dtype="<u8")
    present = [k for k, c in enumerate(chunks) if c is not None]
    sizes = np.array([len(chunks[k]) for k in present], dtype=np.uint64)
    index[present, 1] = sizes
    index[present, 0] = np.cumsum(sizes) - sizes
    raw = index.tobytes()
    return b"".join([*(chunks[k] for k in present), raw, crc32c(raw)])
