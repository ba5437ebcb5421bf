"""The store's chunks and shards as bytes: encoded once per image, assembled into Zarr v3 shard files.

Every per-image array of the store (docs/store.md) has one image per chunk, so an image's encoded chunk does
not depend on where the image lands in the store. The part task encodes its images (`encode_images`) and
stages the bytes; a shard file is then the concatenation of its chunks and the sharding index
(`shard_file`). No chunk goes through zarr-python's codec pipeline on the write path, whose per-chunk
overhead was a fifth of an image's cost (docs/store.md).

Each array's chunk is encoded by its codec chain (`pipeline.store.arrays.ArrayCodecs`, which also decodes it);
this module lays the chunks out in shard files, whose index layout is defined here once.
"""

import numpy as np

from pipeline.store.arrays import ArrayCodecs, crc32c

EMPTY = np.uint64(2**64 - 1)  # offset and length of an absent chunk in a sharding index


def index_bytes(per_shard: int) -> int:
    """Bytes of a shard's index: an (offset, length) pair of uint64 per chunk, then its crc32c."""
    return 16 * per_shard + 4


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
