"""Each per-image array's codec chain in one class: how zarr is told of it, how the writer encodes a chunk, how the
reader bounds and decodes one (FFCV's writer/reader split keeps a field's encoder and decoder together).

Every array of the store (docs/store.md) has one image per chunk, inside a Zarr v3 shard. Two chains exist:
L's `colorize.med_rans` (MED prediction + context-modelled rANS, `pipeline.store.codec`) then crc32c; and bytes
(little endian) + zstd + crc32c, the Zarr v3 specification's codecs, for every other array and for L with
--l-codec zstd. `encode` produces the bytes zarr-python would write (tests/pipeline/store/test_chunks.py compares
whole shard files with zarr's own), so plain zarr reads what is written here.
"""

import math
from dataclasses import dataclass
from functools import cached_property

import google_crc32c
import numcodecs
import numpy as np

L_CODECS = ("med_rans", "zstd")  # L's codec: this package's image codec, or the Zarr v3 specification's zstd
IMAGE_CHAIN = ("colorize.med_rans", "crc32c")  # the codec names inside the shard, as zarr.json lists them
ZSTD_CHAIN = ("bytes", "zstd", "crc32c")


def crc32c(data) -> bytes:
    """The 4 bytes zarr's `crc32c` codec appends: CRC-32C of data, little endian."""
    return int(google_crc32c.value(data)).to_bytes(4, "little")


def crc_ok(data) -> bool:
    """Whether bytes (or a uint8 array) end with the crc32c of what precedes them, as zarr's crc32c codec writes."""
    return int(google_crc32c.value(data[:-4])) == int.from_bytes(data[-4:], "little")


@dataclass(frozen=True)
class ArrayCodecs:
    """The codec chain of one per-image array of `dtype`: the lossless image codec (`image`, uint8 images whose
    last two axes are rows and columns) or zstd at `level` (the level only matters to the writer)."""

    dtype: str
    level: int = 1
    image: bool = False

    @classmethod
    def of_chain(cls, names: tuple, dtype) -> "ArrayCodecs | None":
        """The codecs of an array whose shard codecs are `names` (from its zarr.json); None for a chain this
        project never writes."""
        if names not in (IMAGE_CHAIN, ZSTD_CHAIN):
            return None
        return cls(np.dtype(dtype).name, image=names == IMAGE_CHAIN)

    @property
    def chain(self) -> tuple[str, ...]:
        return IMAGE_CHAIN if self.image else ZSTD_CHAIN

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
        """The bytes of one chunk (one image) as zarr stores them, crc32c included."""
        if self.image:
            packed = self._image_codec.encode_array(image)
        else:
            packed = bytes(self._zstd.encode(np.ascontiguousarray(image, dtype=self._little).reshape(-1)))
        return packed + crc32c(packed)

    def max_chunk(self, tail: tuple[int, ...]) -> int:
        """Bytes: the most one image of shape `tail` can take encoded, crc32c included (a bound on every read)."""
        if self.image:
            from kernels import lossless  # here, not above: the settings import this module, numba's compiler not

            return lossless.max_encoded_bytes(int(np.prod(tail[:-1])), tail[-1]) + 4
        raw = int(np.prod(tail, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        return raw + raw // 128 + 1024 + 4  # zstd's bound on incompressible data, with room to spare

    def decode(self, chunk, out: np.ndarray, zstd) -> None:
        """Decode one chunk (crc32c included, already checked) into `out`, an image of this array; `zstd` is the
        calling thread's `zstandard.ZstdDecompressor` (not thread-safe; one per chunk would cost 3x the decode).
        ValueError or zstandard.ZstdError for bytes that do not decode to exactly one image."""
        if self.image:
            from kernels import lossless

            shape = (math.prod(out.shape[:-1]), out.shape[-1])
            lossless.decode(chunk[:-4], *shape, out=out.reshape(shape))
            return
        raw = zstd.decompress(chunk[:-4], max_output_size=out.nbytes)
        if len(raw) != out.nbytes:
            raise ValueError(f"{len(raw)} bytes, expected {out.nbytes}")
        out[...] = np.frombuffer(raw, self._little).reshape(out.shape)


def array_codecs(name: str, dtype, level: int, l_codec: str = "med_rans") -> ArrayCodecs:
    """The codecs of the store's array `name`: the lossless image codec on L (unless `l_codec` is zstd), zstd on
    the others (`l_codec` is validated with the rest of the settings, `PreprocessConfig`)."""
    return ArrayCodecs(dtype=np.dtype(dtype).name, level=level, image=name == "L" and l_codec == "med_rans")
