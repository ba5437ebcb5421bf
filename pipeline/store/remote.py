"""The shard files of a store in an object store, as the reader uses them (`LocalShards`' twin).

Each shard's index is fetched once, with a suffix read of its last bytes, checked (crc32c, every chunk inside the
object) and kept. The chunks of a random batch are fetched with ranged reads, the chunks of one shard coalesced
into one request where they are close, and many shards in flight at once. Whole shards (the quasi order, and the
small shards of one value per image) are fetched in one read each. With a `ShardCache`, whole shards go to a
local disk and are read from there like local shard files; without one, nothing is written to disk and memory
holds only what the batches in flight need. A failed request is retried by obstore, then here with backoff for
`retry_timeout` seconds (a storage option, default 120: a server that restarts); one that still fails raises
StoreError naming the shard and the image.
"""

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from pipeline.common.cli import one_line
from pipeline.storage import TooLarge
from pipeline.store.arrays import crc_ok
from pipeline.store.chunks import EMPTY, index_bytes
from pipeline.store.format import StoreError
from pipeline.store.shardfiles import LocalShards, ShardRequest, check_index

log = logging.getLogger("colorize.remote")
IO_THREADS = 32  # requests in flight: an object store answers in tens of ms, and bandwidth comes from many
INDEXES = 65536  # shard indexes kept (16 B per image each): 4 M images' worth


class RemoteShards:
    """The shard files under an object store prefix; safe across threads."""

    def __init__(self, root, cache=None):
        """cache: a function of the store's listing that gives the bound `ShardCache`, or None."""
        if cache is not None:
            cache = cache(root.listed())  # one listing: sizes (whether all shards fit) and identities (ETags)
        self.root, self.cache = root, cache
        self.local = LocalShards(cache.root, 4096, cache.name) if cache is not None else None
        self._index: OrderedDict[str, tuple[int, np.ndarray, np.ndarray]] = OrderedDict()
        self._small: OrderedDict[str, np.ndarray] = OrderedDict()  # whole shards of one value per image
        self._filling: dict[str, Future] = {}  # shards being fetched into the cache
        self._touched: dict[str, float] = {}  # when each cached shard was last marked as used
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="shard-io")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.local is not None:
            self.local.close()

    def gather(self, requests: list[ShardRequest], whole: bool = False) -> list[list]:
        """The chunks of each request, in its order: those of shards already open in the cache read here, as from
        a local store; the others fetched by the I/O threads, all at once."""
        out: list = [None] * len(requests)
        if self.cache is not None:
            for k, r in enumerate(requests):
                if self.local.is_open(r.key) and (whole or r.small or self._cache_all()):
                    out[k] = self._read_cached(r, whole)
        missing = [k for k, got in enumerate(out) if got is None]
        for k, got in zip(missing, self._pool.map(lambda k: self._one(requests[k], whole), missing), strict=True):
            out[k] = got
        return out

    def _read_cached(self, r: ShardRequest, whole: bool) -> list | None:
        """The chunks from the cache's copy of a shard, each checked against its crc32c (None: damaged, or gone);
        the copy is marked as used at most once a minute (its mtime orders the evictions)."""
        now = time.monotonic()
        if now - self._touched.get(r.key, -60.0) >= 60.0:
            self._touched[r.key] = now
            if self.cache.get(r.key) is None:
                return None
        try:
            got = self.local.gather([r], whole)[0]
        except (StoreError, FileNotFoundError):
            return None
        return got if all(crc_ok(chunk) for chunk in got) else None

    def _one(self, r: ShardRequest, whole: bool) -> list:
        if self.cache is not None and (whole or r.small or self._cache_all()):
            cached = self._cached(r, whole)
            if cached is not None:
                return cached
        if r.small or whole:
            data = self._whole(r)
            size, offsets, lengths = self._check(r, data, len(data))
            return [self._view(r, data, offsets, lengths, at, image) for at, image in zip(r.at, r.images, strict=True)]
        size, offsets, lengths = self._indexed(r)
        starts = [int(offsets[at]) for at in r.at]
        for at, image in zip(r.at, r.images, strict=True):
            if offsets[at] == EMPTY:
                raise StoreError(f"{self.root}: shard {r.key} holds no chunk for image {image}")
        got = self._fetch(r, lambda p: p.read_ranges(starts, [int(lengths[at]) for at in r.at]))
        return [np.frombuffer(g, np.uint8) for g in got]

    def _cache_all(self) -> bool:
        """Whether random reads should fetch and cache whole shards: when the cache can hold them all."""
        return self.cache is not None and self.cache.limit >= self.cache.store_bytes

    def _cached(self, r: ShardRequest, whole: bool) -> list | None:
        """The chunks from the cache's copy of the shard, fetched into it first on a miss; None if it cannot be
        cached (too big, a full disk)."""
        for _ in (1, 2):
            if self.cache.get(r.key) is None and not self._fill(r):
                return None
            got = self._read_cached(r, whole)  # the cached copy is re-verified on every read
            if got is not None:
                return got
            self.local.close()  # damaged, or evicted meanwhile: fetch it again
            self.cache.forget(r.key)
        return None

    def _fill(self, r: ShardRequest) -> bool:
        """Fetch a whole shard into the cache, once however many threads want it at the same time."""
        with self._lock:
            pending = self._filling.get(r.key)
            if pending is None:
                pending = self._filling[r.key] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return pending.result()
        try:
            data, etag = self._fetch(r, lambda p: p.read_meta(r.max_bytes))
            if not self.cache.matches(r.key, etag):
                raise StoreError(f"{self.root}: shard {r.key} changed since the store was opened (rebuilt meanwhile?)")
            done = self.cache.put(r.key, data) is not None
            pending.set_result(done)
            return done
        except BaseException as e:
            pending.set_exception(e)
            raise
        finally:
            with self._lock:
                self._filling.pop(r.key, None)

    def _whole(self, r: ShardRequest) -> np.ndarray:
        with self._lock:
            data = self._small.get(r.key)
        if data is not None:
            return data
        data = np.frombuffer(self._fetch(r, lambda p: p.read_bytes(r.max_bytes)), np.uint8)
        if r.small:
            with self._lock:
                self._small[r.key] = data
                while len(self._small) > INDEXES:
                    self._small.popitem(last=False)
        return data

    def _indexed(self, r: ShardRequest) -> tuple[int, np.ndarray, np.ndarray]:
        with self._lock:
            found = self._index.get(r.key)
        if found is not None:
            return found
        nbytes = index_bytes(r.per_shard)
        size, tail = self._fetch(r, lambda p: p.read_suffix(nbytes))
        found = self._check(r, tail, size)
        with self._lock:
            self._index[r.key] = found
            while len(self._index) > INDEXES:
                self._index.popitem(last=False)
        return found

    def _check(self, r: ShardRequest, data, size: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(size, offsets, lengths) of a shard's index (data ends with it); StoreError if it fails its checks."""
        nbytes = index_bytes(r.per_shard)
        raw = bytes(data[len(data) - nbytes :]) if len(data) >= nbytes else b""
        return size, *check_index(raw, size, r.per_shard, self.root, r.key, r.images[0], r.max_chunk)

    def _view(self, r: ShardRequest, data: np.ndarray, offsets, lengths, at: int, image: int) -> np.ndarray:
        if offsets[at] == EMPTY:
            raise StoreError(f"{self.root}: shard {r.key} holds no chunk for image {image}")
        return data[int(offsets[at]) : int(offsets[at] + lengths[at])]

    def _fetch(self, r: ShardRequest, read):
        """read(the shard's ObjectPath), retried with backoff (above obstore's own retries) for `retry_seconds`
        while the store does not answer, then StoreError naming the shard and the image."""
        deadline, wait = time.monotonic() + self.root.retry_seconds, 0.25
        while True:
            try:
                return read(self.root / r.key)
            except FileNotFoundError:
                raise StoreError(f"{self.root}: shard {r.key} is missing (image {r.images[0]})") from None
            except TooLarge as e:
                raise StoreError(f"{self.root}: shard {r.key} has {e.size} bytes, more than its chunks can (image "
                                 f"{r.images[0]})") from None  # fmt: skip
            except OSError as e:
                if time.monotonic() + wait > deadline:
                    raise StoreError(f"{self.root}: shard {r.key} cannot be read (image {r.images[0]}): {e}") from None
                log.warning("%s: shard %s: %s; retrying in %.1f s", self.root, r.key, one_line(e)[:200], wait)
                time.sleep(wait)
                wait = min(2 * wait, 8.0)


def shards_of(path, cache: int = 16384, shard_cache=None):
    """The shard files of a store: LocalShards for a local folder, RemoteShards for an object store prefix."""
    return LocalShards(path.local, cache) if path.local else RemoteShards(path, shard_cache)
