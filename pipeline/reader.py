"""The read side of the store: images by index, straight from the shard files (the writer is `pipeline.chunks`).

A shard file is its chunks followed by an index of (offset, length) pairs and that index's crc32c. The reader
opens each shard it touches once and keeps the file, with its checked index, in a bounded cache. Scattered
images are read chunk by chunk (`fetch`); the images of whole shards, as the quasi-random order visits them,
through a read-only memory map of each shard (`fetch(..., mapped=True)`), one per shard and without copies.
Every chunk's crc32c is verified before it is decoded into the caller's buffer. zarr-python instead runs its
codec pipeline per chunk, an overhead that dominates random batches. Chains this module does not know (L in
format versions 1 and 2) are read through zarr-python.
"""

import json
import mmap
import os
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
import zstandard

from kernels import lossless
from pipeline.store import StoreError, open_store, shard_key

EMPTY = 2**64 - 1  # offset and length of an absent chunk in a sharding index
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


class _Shard:
    """An open shard file and its checked index; the file is closed once evicted and released by every user."""

    __slots__ = ("fd", "size", "offsets", "lengths", "whole", "users", "evicted")

    def __init__(self, fd: int, size: int, offsets: list, lengths: list, whole: np.ndarray | None):
        self.fd, self.size, self.offsets, self.lengths, self.whole = fd, size, offsets, lengths, whole
        self.users, self.evicted = 0, False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShardReader:
    """Reads images of the per-image arrays `names` of a finished store by global index; safe across threads."""

    def __init__(self, path, names=("L", "bins", "label"), cache: int = 16384):
        self.path = Path(path)
        self.group = open_store(path)
        self.n = int(self.group.attrs["n_images"])
        self.layouts = {k: ArrayLayout.of(k, json.loads((self.path / k / "zarr.json").read_text())) for k in names}
        self.shard_images = next(iter(self.layouts.values())).per_shard
        # Open files count against RLIMIT_NOFILE: the cache keeps at most half of it.
        self._cap = max(16, min(cache, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2))
        self._shards: dict[tuple[str, int], _Shard] = {}  # oldest first
        self._lock = threading.Lock()
        self._local = threading.local()

    def close(self) -> None:
        """Close every cached file (those in use by another thread when it releases them)."""
        with self._lock:
            for entry in self._shards.values():
                entry.evicted = True
                if entry.users == 0:
                    entry.close()
            self._shards.clear()

    def __del__(self):
        if hasattr(self, "_shards"):
            self.close()

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.empty((n, *lay.tail), lay.dtype) for k, lay in self.layouts.items()}

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The images idx (any order, repeats allowed) of every array, decoded into new arrays."""
        out = self.empty(len(idx))
        self.decode(self.fetch(idx), np.arange(len(idx)), out)
        return out

    def fetch(self, idx: np.ndarray, mapped: bool = False) -> Fetched:
        """The encoded chunks of images idx, every array: read chunk by chunk, or with `mapped` as views of a
        memory map of each shard they lie in (for images that fill whole shards; the maps go with the result)."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"image indices must be in [0, {self.n}), got {idx.min()}..{idx.max()}")
        images = idx.tolist()
        by_shard: dict[int, list[int]] = {}  # plain Python: a random batch touches one image per shard
        for k, i in enumerate(images):
            by_shard.setdefault(i // self.shard_images, []).append(k)
        chunks, where = {}, {}
        for name, lay in self.layouts.items():
            if lay.chain != "zarr":
                chunks[name], where[name] = [None] * len(images), [None] * len(images)
                for shard, members in by_shard.items():
                    self._fetch_shard(lay, shard, images, members, chunks[name], where[name], mapped)
        return Fetched(idx, chunks, where)

    def _fetch_shard(self, lay, shard: int, images: list, members: list, got: list, files: list, mapped: bool):
        """Fill got[m] (and files[m]) for the members m, images of this shard, with their chunks' bytes."""
        key = shard_key(lay.name, shard)
        entry = self._acquire(lay, shard, key, images[members[0]])
        try:
            first, whole = shard * self.shard_images, entry.whole
            if whole is None and mapped:
                whole = self._map(entry, key, images[members[0]])
            for m in members:
                slot = images[m] - first
                offset, length = entry.offsets[slot], entry.lengths[slot]
                if offset == EMPTY:
                    raise StoreError(f"{self.path}: shard {key} holds no chunk for image {images[m]}")
                if whole is not None:  # a view, no read
                    got[m] = whole[offset : offset + length]
                else:
                    data = os.pread(entry.fd, length, offset)
                    if len(data) != length:
                        raise StoreError(f"{self.path}: shard {key} is truncated (image {images[m]})")
                    got[m] = np.frombuffer(data, np.uint8)
                files[m] = key
        finally:
            self._release(entry)

    def _map(self, entry: _Shard, key: str, image: int) -> np.ndarray:
        """A read-only map of an open shard; a file shorter than when its index was checked is refused (reading a
        map past the end of its file would kill the process)."""
        if os.fstat(entry.fd).st_size < entry.size:
            raise StoreError(f"{self.path}: shard {key} is truncated (image {image})")
        return np.frombuffer(mmap.mmap(entry.fd, entry.size, prot=mmap.PROT_READ), np.uint8)

    def _acquire(self, lay: ArrayLayout, shard: int, key: str, image: int) -> _Shard:
        """The cached shard, opened on a miss; past the cap the oldest shard leaves the cache."""
        with self._lock:
            entry = self._shards.get((lay.name, shard))
            if entry is not None:
                entry.users += 1
                return entry
        opened = self._open(lay, key, image)
        with self._lock:
            entry = self._shards.setdefault((lay.name, shard), opened)
            entry.users += 1
            if entry is not opened:  # another thread opened it meanwhile
                opened.close()
            while len(self._shards) > self._cap:
                old = self._shards.pop(next(iter(self._shards)))
                old.evicted = True
                if old.users == 0:
                    old.close()
        return entry

    def _release(self, entry: _Shard) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                entry.close()

    def _open(self, lay: ArrayLayout, key: str, image: int) -> _Shard:
        """Open a shard and check its index (crc32c, every chunk inside the file). A shard of one value per image
        (a few kB) is read whole and closed: its chunks need no read of their own."""
        try:
            fd = os.open(self.path / key, os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError(f"{self.path}: shard {key} is missing (image {image})") from None
        try:
            nbytes = 16 * lay.per_shard + 4
            size = os.fstat(fd).st_size
            whole = np.frombuffer(os.pread(fd, size, 0), np.uint8) if lay.tail == () else None
            raw = whole[size - nbytes :].tobytes() if whole is not None else os.pread(fd, nbytes, max(0, size - nbytes))
            if len(raw) != nbytes or size < nbytes or not _crc_ok(raw):
                raise StoreError(f"{self.path}: the index of shard {key} fails its crc32c (image {image})")
            table = np.frombuffer(raw[:-4], "<u8").reshape(lay.per_shard, 2)
            present = table[:, 0] != EMPTY
            if (table[present, 0] + table[present, 1] > size - nbytes).any():
                raise StoreError(f"{self.path}: shard {key} is truncated (image {image})")
        except BaseException:
            os.close(fd)
            raise
        if whole is not None:
            os.close(fd)
            fd = -1
        return _Shard(fd, size, table[:, 0].tolist(), table[:, 1].tolist(), whole)

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
            if not _crc_ok(chunk):
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


def _crc_ok(data) -> bool:
    """Whether bytes (or a uint8 array) end with the crc32c of what precedes them, as zarr's crc32c codec writes."""
    return int(google_crc32c.value(data[:-4])) == int.from_bytes(data[-4:], "little")
