"""The read side of the store: images by index, straight from the shard files (the writer is `pipeline.store.chunks`).

Two ways to get the encoded chunks of some images, both through `pipeline.store.shardfiles` (each shard file
opened once, its index checked, kept open): `fetch` reads scattered images chunk by chunk, with a `pread` each;
`fetch_shards` maps the shards that images fill whole (as the quasi-random order visits them), one read-only map
per shard and no copies. `decode` then verifies every chunk's crc32c and decodes it into the caller's buffer.
zarr-python instead runs its codec pipeline per chunk, an overhead that dominates random batches. Image i lies at
slot `slots[i]` of the arrays (format 4; format 3's image i at index i).
"""

import sys
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from pipeline.storage import location
from pipeline.store.arrays import ArrayCodecs, crc_ok
from pipeline.store.format import MAX_SHARD_IMAGES, StoreError, image_slots, open_store, read_meta, shard_key
from pipeline.store.remote import shards_of
from pipeline.store.shardfiles import ShardRequest


@dataclass(frozen=True)
class ArrayLayout:
    """What the reader needs of one per-slot array: its item shape and dtype, shard size and codec chain."""

    name: str
    tail: tuple[int, ...]
    dtype: np.dtype
    per_shard: int
    codecs: ArrayCodecs  # decodes each chunk; the writer encodes with the same class
    max_chunk: int  # bytes: the most one image's chunk can take, crc32c included (a bound on every read)

    @classmethod
    def of(cls, name: str, meta: dict, where) -> "ArrayLayout":
        """The layout of an array from its zarr.json; StoreError for a layout the stores of this project never
        have (zarr-python reads such arrays, one chunk at a time)."""
        tail = tuple(meta["shape"][1:])
        per_shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        if not (type(per_shard) is int and 1 <= per_shard <= MAX_SHARD_IMAGES):
            raise StoreError(f"{where}: array {name} has shards of {per_shard!r} images, not 1 to {MAX_SHARD_IMAGES}")
        dtype = np.dtype(meta["data_type"])
        codecs = None
        if len(meta["codecs"]) == 1 and meta["codecs"][0]["name"] == "sharding_indexed":
            conf = meta["codecs"][0]["configuration"]
            names = tuple(c["name"] for c in conf["codecs"])
            little = all(c.get("configuration", {}).get("endian", "little") == "little" for c in conf["codecs"])
            index = [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"] and conf["index_location"] == "end"
            one_image = list(conf["chunk_shape"]) == [1, *tail]
            slash = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/") == "/"
            if index and one_image and slash and little and sys.byteorder == "little":
                codecs = ArrayCodecs.of_chain(names, dtype)
        if codecs is None:
            raise StoreError(f"{where}: array {name} has a codec chain or layout this reader does not read")
        return cls(name, tail, dtype, per_shard, codecs, codecs.max_chunk(tail))


@dataclass
class Fetched:
    """The encoded chunks of some images: chunks[name][k] is image idx[k]'s chunk of array `name` (crc included)."""

    idx: np.ndarray
    chunks: dict[str, list]
    where: dict[str, list[str]]  # the shard file of each chunk, for error messages


def reader_of(store, shard_cache=None) -> "ShardReader":
    """`store` itself if it is a reader already (one opened once and shared), else a reader opened on it."""
    return store if isinstance(store, ShardReader) else ShardReader(store, shard_cache=shard_cache)


class ShardReader:
    """Reads images of the per-image arrays `names` of a finished store by global index; safe across threads."""

    def __init__(self, path, names=("L", "bins", "label"), cache: int = 16384, shard_cache=None):
        """cache: open shard files kept; shard_cache: a `pipeline.store.cache.ShardCache` for a store in an object
        store (whole shards on a local disk)."""
        self.path = location(path)
        self.group = open_store(self.path)
        self.n = int(self.group.attrs["n_images"])
        self.slots = image_slots(self.group)  # image i lies at slot slots[i]
        metas = {k: read_meta(self.path / k / "zarr.json") for k in names}
        self.layouts = {k: ArrayLayout.of(k, meta, self.path) for k, meta in metas.items()}
        self.shard_images = next(iter(self.layouts.values())).per_shard
        build = str(self.group.attrs.get("build_id", ""))
        self.files = shards_of(self.path, cache, shard_cache and shard_cache.binder(build, set(self.layouts)))
        self._local = threading.local()

    def shard_of(self, idx: np.ndarray) -> np.ndarray:
        """The shard each image lies in (the unit the quasi-random order reads whole)."""
        return self.slots[np.asarray(idx, dtype=np.int64)] // self.shard_images

    def close(self) -> None:
        self.files.close()

    def __del__(self):
        if hasattr(self, "files"):
            self.close()

    def empty(self, n: int, layouts=None) -> dict[str, np.ndarray]:
        return {k: np.empty((n, *lay.tail), lay.dtype) for k, lay in (layouts or self.layouts).items()}

    def read(self, idx: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """The images idx (any order, repeats allowed) of the arrays `names` (default: every array the reader was
        opened on), decoded into new arrays; the others are neither fetched nor decoded."""
        layouts = {k: self.layouts[k] for k in names} if names else self.layouts
        out = self.empty(len(idx), layouts)
        self.decode(self._collect(idx, False, layouts), np.arange(len(idx)), out)
        return out

    def fetch(self, idx: np.ndarray) -> Fetched:
        """The encoded chunks of images idx, every array, read chunk by chunk (ranged reads, coalesced per shard,
        from an object store)."""
        return self._collect(idx, whole=False)

    def fetch_shards(self, idx: np.ndarray) -> Fetched:
        """The encoded chunks of images idx, every array, as views of each whole shard they lie in (a memory map
        locally; for images that fill whole shards, as the quasi order visits them)."""
        return self._collect(idx, whole=True)

    def _collect(self, idx: np.ndarray, whole: bool, layouts=None) -> Fetched:
        layouts = layouts or self.layouts
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"image indices must be in [0, {self.n}), got {idx.min()}..{idx.max()}")
        images, slots = idx.tolist(), self.slots[idx].tolist()
        by_shard: dict[int, list[int]] = {}  # plain Python: a random batch touches one image per shard
        for k, s in enumerate(slots):
            by_shard.setdefault(s // self.shard_images, []).append(k)
        requests, targets = [], []
        for name, lay in layouts.items():
            for shard, members in by_shard.items():
                at = [slots[m] - shard * self.shard_images for m in members]
                request = ShardRequest(shard_key(name, shard), lay.per_shard, lay.tail == (), at,
                                       [images[m] for m in members], lay.max_chunk)  # fmt: skip
                requests.append(request)
                targets.append((name, members))
        chunks = {name: [None] * len(images) for name in layouts}
        where = {name: [None] * len(images) for name in layouts}
        for (name, members), request, got in zip(targets, requests, self.files.gather(requests, whole), strict=True):
            for m, chunk in zip(members, got, strict=True):
                chunks[name][m], where[name][m] = chunk, request.key
        return Fetched(idx, chunks, where)

    def decode(self, fetched: Fetched, rows: np.ndarray, out: dict[str, np.ndarray], at: int = 0) -> None:
        """Decode the fetched images at positions `rows` into out[name][at + k] (crc verified first), for every
        array fetched."""
        for name, chunks in fetched.chunks.items():
            self._decode(self.layouts[name], chunks, fetched.where[name], fetched.idx, rows, out[name][at:])

    def _decode(self, lay: ArrayLayout, chunks: list, files: list, images, rows, dst: np.ndarray) -> None:
        zstd = self._zstd()
        for k, r in enumerate(rows):
            chunk = chunks[r]
            if not crc_ok(chunk):
                raise StoreError(f"{self.path}: the chunk of image {images[r]} in shard {files[r]} fails its crc32c")
            try:
                lay.codecs.decode(chunk, dst[k, ...], zstd)  # a view, also of a 0-d item
            except (ValueError, zstandard.ZstdError) as e:
                raise StoreError(f"{self.path}: image {images[r]} in shard {files[r]} does not decode: {e}") from e

    def _zstd(self) -> zstandard.ZstdDecompressor:
        """This thread's zstd context: a context is not thread-safe, and one per chunk would cost 3x the decode."""
        if not hasattr(self._local, "zstd"):
            self._local.zstd = zstandard.ZstdDecompressor()
        return self._local.zstd
