"""The read side of the store: images by index, straight from the shard files (the writer is `pipeline.store.chunks`).

Two ways to get the encoded chunks of some images, both through `pipeline.store.shardfiles` (each shard file
opened once, its index checked, kept open): `fetch` reads scattered images chunk by chunk, with a `pread` each;
`fetch_shards` maps the shards that images fill whole (as the quasi-random order visits them), one read-only map
per shard and no copies. `decode` then verifies every chunk's crc32c and decodes it into the caller's buffer.
zarr-python instead runs its codec pipeline per chunk, an overhead that dominates random batches. Chains this
module does not know (L in format version 2) are read through zarr-python.
"""

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from kernels import lossless
from pipeline.store.format import StoreError, open_store, shard_key
from pipeline.store.shardfiles import EMPTY, LocalShards, crc_ok

CHAINS = {("colorize.med_rans", "crc32c"): "image", ("bytes", "zstd", "crc32c"): "zstd"}


@dataclass(frozen=True)
class ArrayLayout:
    """What the reader needs of one per-image array: its item shape and dtype, shard size and codec chain."""

    name: str
    tail: tuple[int, ...]
    dtype: np.dtype
    per_shard: int
    chain: str  # "image" (L of format 3), "zstd" (every other array), "zarr" (read through zarr-python)

    @classmethod
    def of(cls, name: str, meta: dict) -> "ArrayLayout":
        """The layout of an array from its zarr.json; chain "zarr" unless the reader knows every part of it."""
        tail = tuple(meta["shape"][1:])
        per_shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        chain = "zarr"
        if len(meta["codecs"]) == 1 and meta["codecs"][0]["name"] == "sharding_indexed":
            conf = meta["codecs"][0]["configuration"]
            names = tuple(c["name"] for c in conf["codecs"])
            little = all(c.get("configuration", {}).get("endian", "little") == "little" for c in conf["codecs"])
            index = [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"] and conf["index_location"] == "end"
            one_image = list(conf["chunk_shape"]) == [1, *tail]
            slash = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/") == "/"
            if index and one_image and slash and little and sys.byteorder == "little":
                chain = CHAINS.get(names, "zarr")
        return cls(name, tail, np.dtype(meta["data_type"]), per_shard, chain)


@dataclass
class Fetched:
    """The encoded chunks of some images: chunks[name][k] is image idx[k]'s chunk of array `name` (crc included)."""

    idx: np.ndarray
    chunks: dict[str, list]
    where: dict[str, list[str]]  # the shard file of each chunk, for error messages


class ShardReader:
    """Reads images of the per-image arrays `names` of a finished store by global index; safe across threads."""

    def __init__(self, path, names=("L", "bins", "label"), cache: int = 16384):
        self.path = Path(path)
        self.group = open_store(path)
        self.n = int(self.group.attrs["n_images"])
        self.layouts = {k: ArrayLayout.of(k, json.loads((self.path / k / "zarr.json").read_text())) for k in names}
        self.shard_images = next(iter(self.layouts.values())).per_shard
        self.files = LocalShards(self.path, cache)
        self._local = threading.local()

    def close(self) -> None:
        self.files.close()

    def __del__(self):
        if hasattr(self, "files"):
            self.close()

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.empty((n, *lay.tail), lay.dtype) for k, lay in self.layouts.items()}

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The images idx (any order, repeats allowed) of every array, decoded into new arrays."""
        out = self.empty(len(idx))
        self.decode(self.fetch(idx), np.arange(len(idx)), out)
        return out

    def fetch(self, idx: np.ndarray) -> Fetched:
        """The encoded chunks of images idx, every array, read chunk by chunk."""
        return self._collect(idx, lambda entry, image: None)

    def fetch_shards(self, idx: np.ndarray) -> Fetched:
        """The encoded chunks of images idx, every array, as views of a memory map of each shard they lie in (for
        images that fill whole shards; the maps go with the result)."""
        return self._collect(idx, self.files.mapped)

    def _collect(self, idx: np.ndarray, whole_of) -> Fetched:
        """Fetched chunks of images idx; whole_of(shard, image) gives a shard's bytes to take views of, or None to
        read each chunk."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"image indices must be in [0, {self.n}), got {idx.min()}..{idx.max()}")
        images = idx.tolist()
        by_shard: dict[int, list[int]] = {}  # plain Python: a random batch touches one image per shard
        for k, i in enumerate(images):
            by_shard.setdefault(i // self.shard_images, []).append(k)
        chunks, where = {}, {}
        for name, lay in self.layouts.items():
            if lay.chain == "zarr":
                continue
            chunks[name], where[name] = [None] * len(images), [None] * len(images)
            for shard, members in by_shard.items():
                key = shard_key(name, shard)
                entry = self.files.acquire(key, lay.per_shard, lay.tail == (), images[members[0]])
                try:
                    whole = whole_of(entry, images[members[0]])
                    for m in members:
                        slot = images[m] - shard * self.shard_images
                        offset, length = entry.offsets[slot], entry.lengths[slot]
                        if offset == EMPTY:
                            raise StoreError(f"{self.path}: shard {key} holds no chunk for image {images[m]}")
                        got = whole if whole is not None else entry.whole
                        if got is not None:  # a view, no read
                            chunks[name][m] = got[offset : offset + length]
                        else:
                            chunks[name][m] = self.files.chunk(entry, offset, length, images[m])
                        where[name][m] = key
                finally:
                    self.files.release(entry)
        return Fetched(idx, chunks, where)

    def decode(self, fetched: Fetched, rows: np.ndarray, out: dict[str, np.ndarray], at: int = 0) -> None:
        """Decode the fetched images at positions `rows` into out[name][at + k] (crc verified first)."""
        for name, lay in self.layouts.items():
            if lay.chain == "zarr":
                out[name][at : at + len(rows)] = self._zarr_read(name, fetched.idx[rows])
            else:
                self._decode(lay, fetched.chunks[name], fetched.where[name], fetched.idx, rows, out[name][at:])

    def _decode(self, lay: ArrayLayout, chunks: list, files: list, images, rows, dst: np.ndarray) -> None:
        shape = (int(np.prod(lay.tail[:-1])), lay.tail[-1]) if lay.chain == "image" else None
        zstd = None if shape else self._zstd()
        nbytes = int(np.prod(lay.tail, dtype=np.int64)) * lay.dtype.itemsize
        for k, r in enumerate(rows):
            chunk = chunks[r]
            if not crc_ok(chunk):
                raise StoreError(f"{self.path}: the chunk of image {images[r]} in shard {files[r]} fails its crc32c")
            try:
                if shape:
                    lossless.decode(chunk[:-4], *shape, out=dst[k].reshape(shape))
                    continue
                raw = zstd.decompress(chunk[:-4], max_output_size=nbytes)
                if len(raw) != nbytes:
                    raise ValueError(f"{len(raw)} bytes, expected {nbytes}")
            except (ValueError, zstandard.ZstdError) as e:
                raise StoreError(f"{self.path}: image {images[r]} in shard {files[r]} does not decode: {e}") from e
            dst[k] = np.frombuffer(raw, lay.dtype).reshape(lay.tail)

    def _zstd(self) -> zstandard.ZstdDecompressor:
        """This thread's zstd context: a context is not thread-safe, and one per chunk would cost 3x the decode."""
        if not hasattr(self._local, "zstd"):
            self._local.zstd = zstandard.ZstdDecompressor()
        return self._local.zstd

    def _zarr_read(self, name: str, idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")
        try:
            values = np.asarray(self.group[name].oindex[idx[order]])
        except Exception as e:  # noqa: BLE001 - a damaged shard is reported by name
            raise StoreError(f"{self.path}: cannot read images {idx[:3].tolist()}... of {name}: {e}") from e
        out = np.empty_like(values)
        out[order] = values
        return out
