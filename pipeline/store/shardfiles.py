"""The shard files of a local store, as the reader uses them: each opened once, its index checked, and kept open
in a bounded cache, with two ways to get chunks out of it: `pread` of one chunk, or a read-only memory map of
the whole file (for the images of whole shards).

A shard file is its chunks followed by an index of (offset, length) pairs and that index's crc32c
(`pipeline.store.chunks.shard_file` writes it). Open files count against RLIMIT_NOFILE: the cache keeps at
most half of it.
"""

import mmap
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store.arrays import crc_ok
from pipeline.store.chunks import EMPTY, index_bytes
from pipeline.store.format import StoreError


def check_index(raw: bytes, size: int, per_shard: int, where, key: str, image: int,
                max_chunk: int = 2**62) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(offsets, lengths) of a shard file's index, `raw` being its last index_bytes(per_shard) bytes and `size` its
    size; StoreError, naming the store, the shard and an image of it, if the crc32c fails, a chunk is longer than
    `max_chunk` (no chunk of its array can be) or a chunk lies past the index (checked without wrapping around)."""
    nbytes = index_bytes(per_shard)
    if len(raw) != nbytes or size < nbytes or not crc_ok(raw):
        raise StoreError(f"{where}: the index of shard {key} fails its crc32c (image {image})")
    table = np.frombuffer(raw[:-4], "<u8").reshape(per_shard, 2)
    present = table[:, 0] != EMPTY
    offsets, lengths, room = table[present, 0], table[present, 1], np.uint64(size - nbytes)
    if (lengths > np.uint64(max_chunk)).any():
        raise StoreError(f"{where}: shard {key} has an index entry longer than any chunk of its array (image {image})")
    if (offsets > room).any() or (lengths > room - np.minimum(offsets, room)).any():
        raise StoreError(f"{where}: shard {key} is truncated or its index points past its end (image {image})")
    return table[:, 0], table[:, 1]


@dataclass(frozen=True)
class ShardRequest:
    """The chunks wanted of one shard file: their places in it (slot - first slot), and the images they are."""

    key: str
    per_shard: int
    small: bool  # one value per image: a shard of a few kB, read whole
    at: list[int]
    images: list[int]
    max_chunk: int = 2**62  # bytes: no chunk of the array is longer (a bound on what a read may take)

    @property
    def max_bytes(self) -> int:
        """The most bytes a whole shard of this array can hold: reads of more are refused."""
        return self.per_shard * self.max_chunk + index_bytes(self.per_shard)


class Shard:
    """An open shard file and its checked index; the file is closed once evicted and released by every user."""

    __slots__ = ("key", "fd", "size", "offsets", "lengths", "whole", "users", "evicted")

    def __init__(self, key: str, fd: int, size: int, offsets: list, lengths: list, whole: np.ndarray | None):
        self.key, self.fd, self.size, self.offsets, self.lengths, self.whole = key, fd, size, offsets, lengths, whole
        self.users, self.evicted = 0, False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalShards:
    """The shard files under `root`, opened on first use and kept; safe across threads."""

    def __init__(self, root: Path, cache: int = 16384, names=None):
        """names(key): the file name of a shard below root (a cache's, which carries the object's identity)."""
        self.root = Path(root)
        self.names = names or (lambda key: key)
        self._cap = max(16, min(cache, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2))
        self._open: dict[str, Shard] = {}  # oldest first
        self._lock = threading.Lock()

    def acquire(self, key: str, per_shard: int, small: bool, image: int, max_chunk: int = 2**62) -> Shard:
        """The shard file `key` with its index (opened on a miss; past the cap the oldest leaves the cache), held
        until `release`. small: one value per image, a few kB: read whole and closed at once."""
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                entry.users += 1
                return entry
        opened = self._read_index(key, per_shard, small, image, max_chunk)
        with self._lock:
            entry = self._open.setdefault(key, opened)
            entry.users += 1
            if entry is not opened:  # another thread opened it meanwhile
                opened.close()
            while len(self._open) > self._cap:
                old = self._open.pop(next(iter(self._open)))
                old.evicted = True
                if old.users == 0:
                    old.close()
        return entry

    def is_open(self, key: str) -> bool:
        return key in self._open

    def release(self, entry: Shard) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                entry.close()

    def close(self) -> None:
        """Close every cached file (those in use by another thread when it releases them)."""
        with self._lock:
            for entry in self._open.values():
                entry.evicted = True
                if entry.users == 0:
                    entry.close()
            self._open.clear()

    def gather(self, requests: list[ShardRequest], whole: bool = False) -> list[list]:
        """The chunks of each request, in its order: views of the whole shard (mapped) or read one by one."""
        out = []
        for r in requests:
            entry = self.acquire(r.key, r.per_shard, r.small, r.images[0], r.max_chunk)
            try:
                data = self.mapped(entry, r.images[0]) if whole else entry.whole
                got = []
                for at, image in zip(r.at, r.images, strict=True):
                    offset, length = entry.offsets[at], entry.lengths[at]
                    if offset == EMPTY:
                        raise StoreError(f"{self.root}: shard {r.key} holds no chunk for image {image}")
                    if data is not None:  # a view, no read
                        got.append(data[offset : offset + length])
                    else:
                        got.append(self.chunk(entry, offset, length, image))
                out.append(got)
            finally:
                self.release(entry)
        return out

    def chunk(self, entry: Shard, offset: int, length: int, image: int) -> np.ndarray:
        """One chunk's bytes (crc included), with one pread."""
        data = os.pread(entry.fd, length, offset)
        if len(data) != length:
            raise StoreError(f"{self.root}: shard {entry.key} is truncated (image {image})")
        return np.frombuffer(data, np.uint8)

    def mapped(self, entry: Shard, image: int) -> np.ndarray:
        """The whole file as a read-only map; a file shorter than when its index was checked is refused (reading
        a map past the end of its file would kill the process)."""
        if entry.whole is not None:
            return entry.whole
        if os.fstat(entry.fd).st_size < entry.size:
            raise StoreError(f"{self.root}: shard {entry.key} is truncated (image {image})")
        return np.frombuffer(mmap.mmap(entry.fd, entry.size, prot=mmap.PROT_READ), np.uint8)

    def _read_index(self, key: str, per_shard: int, small: bool, image: int, max_chunk: int) -> Shard:
        """Open a shard and check its index (crc32c, every chunk inside the file and no longer than max_chunk); a
        small shard is read whole, if it is no bigger than its chunks can make it."""
        try:
            fd = os.open(self.root / self.names(key), os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError(f"{self.root}: shard {key} is missing (image {image})") from None
        try:
            nbytes = index_bytes(per_shard)
            size = os.fstat(fd).st_size
            if small and size > per_shard * max_chunk + index_bytes(per_shard):
                raise StoreError(f"{self.root}: shard {key} has {size} bytes, more than its chunks can (image {image})")
            whole = np.frombuffer(os.pread(fd, size, 0), np.uint8) if small else None
            raw = whole[size - nbytes :].tobytes() if whole is not None else os.pread(fd, nbytes, max(0, size - nbytes))
            offsets, lengths = check_index(raw, size, per_shard, self.root, key, image, max_chunk)
        except BaseException:
            os.close(fd)
            raise
        if whole is not None:
            os.close(fd)
            fd = -1
        return Shard(key, fd, size, offsets.tolist(), lengths.tolist(), whole)
