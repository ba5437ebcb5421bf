"""Seekable read-only files over an object: `RangeFile` reads it in blocks of ranged GETs."""

import io
import threading


class Seekable(io.RawIOBase):
    """A read-only, seekable file of `size` bytes at position `pos`; subclasses fill `readinto`."""

    size: int = 0
    pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos


class RangeFile(Seekable):
    """A read-only, seekable file over one object, read in blocks of `block` bytes with ranged GETs (tarfile lists
    a shard through it, header by header, without downloading the members it skips); a read of a block or more,
    or any read with block <= 0 (Parquet's exact column chunks), fetches just its bytes."""

    def __init__(self, path, size: int, block: int = 1 << 16):
        super().__init__()
        self.path, self.size, self.block, self.pos = path, size, block, 0
        self._cache: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def readinto(self, buffer) -> int:
        n = min(len(buffer), max(0, self.size - self.pos))
        if n and (self.block <= 0 or n >= self.block):  # a read of its own size: exactly those bytes, uncached
            data = self.path.read_range(self.pos, n)
            buffer[: len(data)] = data
            self.pos += len(data)
            return len(data)
        got = 0
        while got < n:
            k, at = divmod(self.pos + got, self.block)
            data = self._block(k)
            take = min(n - got, len(data) - at)
            if take <= 0:
                break
            buffer[got : got + take] = data[at : at + take]
            got += take
        self.pos += got
        return got

    def _block(self, k: int) -> bytes:
        with self._lock:
            if k not in self._cache:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                start = k * self.block
                self._cache[k] = self.path.read_range(start, min(self.block, self.size - start))
            return self._cache[k]
