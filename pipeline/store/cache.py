"""A bounded local cache of whole shard files of stores in object storage (`--cache-dir DIR --cache-limit BYTES`).

The cache knows what it caches. Each shard is one file, `DIR/<store digest>/<build id>/<shard key>.<identity>`:
the build id is the store's own (`build_id`, new each time a store is built), so a cache filled from an earlier
build at the same URL is never read (and is deleted when the cache opens); the identity is a digest of the shard
object's ETag as the reader listed it, so an object replaced since is fetched again, and a shard whose GET answers
with another ETag than the listing's is refused (the store changed under the reader). A file is written to a temp
name and renamed into place, so that a process killed while it writes leaves no half file under a shard's name
(its temp files are removed when a cache opens). Reads go through the same index and crc32c checks as any shard
file, so a damaged file is found, deleted and fetched again. The least recently used shards go first once the
cache holds more than its limit. Several processes (the ranks of one node) may share a folder: a shard renamed
into place is whole, a file deleted while another process reads it stays readable to that process, and each
process re-counts the folder now and then, so that together they keep near the limit. A full disk evicts and
retries once, then serves the shard from memory without caching it.
"""

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
from pathlib import Path

log = logging.getLogger("colorize.cache")
RECOUNT = 256  # inserts between two counts of the folder (other processes write to it too)


BUILD = re.compile(r"[0-9a-f]{8,64}")


class ShardCache:
    """Whole shard files of one store, on a local disk, at most `limit` bytes; `bind` (the reader calls it) says
    which build of the store and which objects it caches."""

    def __init__(self, folder: str | Path, limit: int, store: str):
        self.top = Path(folder) / hashlib.sha256(store.encode()).hexdigest()[:16]
        self.limit = limit
        self.store_bytes = 0  # of the store's shards, when the reader has listed them
        self.identity: dict[str, str] = {}  # shard key -> a digest of its ETag as listed
        self.root = self.top / "unbound"
        self._lock = threading.Lock()
        self._inserts = 0
        self._warned = False
        self._bytes = 0

    def bind(self, build_id: str, identities: dict[str, str]) -> None:
        """Cache the shards of the store's build `build_id`, whose objects are listed with these identities; the
        folders of other builds are deleted (a store rebuilt at the same URL), so that they are never read."""
        build = build_id if BUILD.fullmatch(str(build_id)) else "unversioned"  # stores built before build ids
        self.root = self.top / build
        self.identity = {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in identities.items()}
        self.root.mkdir(parents=True, exist_ok=True)
        for other in self.top.iterdir():
            if other != self.root and other.is_dir() and not other.is_symlink():
                shutil.rmtree(other, ignore_errors=True)
        for tmp in self.root.rglob(".*.tmp*"):  # left by a process killed while it wrote
            tmp.unlink(missing_ok=True)
        self._bytes = self._count()

    def binder(self, build_id: str, arrays: set[str]):
        """A function of a store's listing ({key: (size, identity)}) that binds this cache to it and returns it."""

        def bind(listed: dict) -> "ShardCache":
            self.bind(build_id, {k: v[1] for k, v in listed.items()})
            self.store_bytes = sum(v[0] for k, v in listed.items() if k.split("/")[0] in arrays)
            return self

        return bind

    def name(self, key: str) -> str | None:
        """The file name of a shard in the cache (its key and identity), None for one the listing did not show."""
        ident = self.identity.get(key)
        return f"{key}.{ident}" if ident else None

    def matches(self, key: str, etag: str) -> bool:
        """Whether an ETag a GET answered with is the one listed for the shard (no ETag: nothing to compare)."""
        return not etag or hashlib.sha256(etag.encode()).hexdigest()[:16] == self.identity.get(key)

    def path(self, key: str) -> Path | None:
        name = self.name(key)
        return self.root / name if name else None

    def get(self, key: str) -> Path | None:
        """The cached file of a shard, marked as just used, or None."""
        path = self.path(key)
        if path is None:
            return None
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def forget(self, key: str) -> None:
        """Drop a cached file that failed its checks."""
        path = self.path(key)
        try:
            size = path.stat().st_size
            path.unlink()
        except (FileNotFoundError, AttributeError):
            return
        with self._lock:
            self._bytes -= size

    def put(self, key: str, data) -> Path | None:
        """Cache a shard's bytes; None when it cannot be cached (too big, unlisted, or the disk is full)."""
        if len(data) > self.limit or self.path(key) is None:
            return None
        for attempt in (1, 2):
            try:
                self._make_room(len(data))
                path = self.path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.parent / f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}"
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                with self._lock:
                    self._bytes += len(data)
                return path
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or attempt == 2:
                    if not self._warned:
                        log.warning("shard cache %s: %s; reading past it", self.root, e)
                        self._warned = True
                    return None
                self._evict(self._bytes // 2)  # the disk is fuller than the limit says: give half back
        return None

    def _make_room(self, nbytes: int) -> None:
        with self._lock:
            self._inserts += 1
            if self._inserts % RECOUNT == 0:
                self._bytes = self._count()
            over = self._bytes + nbytes - self.limit
        if over > 0:
            self._evict(over)

    def _evict(self, nbytes: int) -> None:
        """Delete the least recently used files, at least nbytes of them."""
        files = []
        for path in self.root.rglob("*"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.name.startswith("."):
                files.append((st.st_mtime_ns, st.st_size, path))  # `get` marks a use by touching it
        freed = 0
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if freed >= nbytes:
                break
            path.unlink(missing_ok=True)
            freed += size
        with self._lock:
            self._bytes = max(0, self._bytes - freed)

    def _count(self) -> int:
        total = 0
        for path in self.root.rglob("*"):
            try:
                if path.is_file():
                    total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total
