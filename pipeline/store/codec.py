"""`colorize.med_rans`: the Zarr v3 array -> bytes codec of the store's L chunks (`kernels.lossless`).

A chunk of uint8 with shape (..., H, W) is coded as one image of prod(...) * H rows and W columns: MED
prediction and context-modelled rANS, lossless, 16 % smaller than the delta filter and zstd that zarr ships
(docs/store.md). Plain zarr-python reads it once this package is installed: the codec is registered under the
entry point group `zarr.codecs` (pyproject.toml), and also on import of this module.

Metadata: {"name": "colorize.med_rans", "configuration": {"version": 1}}. The stream layout is in
`kernels.lossless`; its version byte is checked on decode.
"""

import asyncio
from dataclasses import dataclass
from math import prod

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from kernels import lossless

CODEC_NAME = "colorize.med_rans"


@dataclass(frozen=True)
class MedRansCodec(ArrayBytesCodec):
    """Lossless MED + rANS coding of uint8 chunks whose last two axes are an image (`kernels.lossless`)."""

    is_fixed_size = False
    version: int = lossless.VERSION

    def __init__(self, *, version: int = lossless.VERSION) -> None:
        if version != lossless.VERSION:
            raise ValueError(
                f"{CODEC_NAME} version {version} is not supported (this package writes {lossless.VERSION})"
            )
        object.__setattr__(self, "version", version)

    @classmethod
    def from_dict(cls, data):
        _, config = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(config or {}))

    def to_dict(self):
        return {"name": CODEC_NAME, "configuration": {"version": self.version}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        if dtype.to_native_dtype() != np.uint8:
            raise ValueError(f"{CODEC_NAME} codes uint8 arrays, got {dtype.to_native_dtype()}")
        if len(shape) < 2:
            raise ValueError(f"{CODEC_NAME} needs at least two dimensions (rows, columns), got shape {shape}")

    @staticmethod
    def _image_shape(shape) -> tuple[int, int]:
        return prod(shape[:-1]), shape[-1]

    def encode_array(self, chunk: np.ndarray) -> bytes:
        """The encoded bytes of one chunk (what `_encode_single` stores)."""
        return lossless.encode(np.ascontiguousarray(chunk, dtype=np.uint8).reshape(self._image_shape(chunk.shape)))

    # The kernels release the GIL: in a thread each, the chunks of one read are coded in parallel.
    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:
        data = await asyncio.to_thread(self.encode_array, chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        rows, cols = self._image_shape(chunk_spec.shape)
        image = await asyncio.to_thread(lossless.decode, chunk_bytes.as_numpy_array(), rows, cols)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec) -> int:
        raise NotImplementedError  # variable-size, like zstd


register_codec(CODEC_NAME, MedRansCodec)
