"""Gzip'd tar shards (`.tar.gz`, `.tgz`) as sources, read as streams: gzip has no random access, so a shard is
listed by decompressing it once, and its members are read in order from one decompressing stream per shard
that moves forward only (`Streams`). The run gives each such shard a part of its own (`pipeline.part.cut_parts`),
so it is decompressed once to list it and once to read it, never again for each batch.

A member's offset and size are those of its data in the decompressed tar, so the listing is
`pipeline.tars`' own (the same samples, labels and skips), over the stream. A stream that breaks (a damaged or
cut gzip member) ends the listing there: the samples before the break are kept and the shard is recorded as
`damaged_archive`, naming where.
"""

import gzip
import re
import threading
import zlib
from collections import OrderedDict

from pipeline.storage import location
from pipeline.tars import BLOCK, Listing, _damage, _error, _walk

GZ = (".tar.gz", ".tgz")
STREAM_BUFFER = 4 << 20  # bytes fetched at a time from a bucket: one ranged GET each
ARCHIVE_MEMBER = re.compile(r"(.*?\.(?:tar|tar\.gz|tgz))/(.+)", re.IGNORECASE | re.DOTALL)


def is_gz(name: str) -> bool:
    return str(name).lower().endswith(GZ)


def split_member(path: str) -> tuple[str, str] | None:
    """(the archive, the member below it) of a source path `<...>.tar[.gz]/<member>`: the first archive named."""
    m = ARCHIVE_MEMBER.fullmatch(path)
    return (m.group(1), m.group(2)) if m else None


def open_stream(path):
    """The decompressed tar of a shard, read forward (a bucket's object in ranged GETs of STREAM_BUFFER)."""
    raw = location(path).open_stream(STREAM_BUFFER)
    return gzip.GzipFile(fileobj=raw, mode="rb"), raw


def index_gz(path) -> Listing:
    """The listing of a gzip'd shard, decompressed once; where a broken stream ended it, recorded."""
    try:
        f, raw = open_stream(path)
    except OSError as e:
        return Listing([], [], _unreadable(e), 0)
    with raw, f:
        members, others = [], []
        stop, error, last = _walk(f, members, others)
        if error is not None and members:  # the stream broke: inside the last member's data, maybe
            try:
                f.seek(members[-1].offset + members[-1].size)
            except (OSError, EOFError, zlib.error):
                stop = members[-1].offset  # the end as far as it decompresses: that member is cut short
                return Listing(members, others, _damage(stop + 1, stop, False, error, last), stop)
        try:  # what follows the last header: the end-of-archive zeros of a clean one
            f.seek(stop)
            rest, zeros = 0, True
            while chunk := f.read(1 << 20):
                rest += len(chunk)
                zeros = zeros and chunk.count(0) == len(chunk)
        except (OSError, EOFError, zlib.error) as e:
            rest, zeros, error = 0, False, error or f"the gzip stream breaks: {_error(e)}"
    clean = error is None and rest >= BLOCK and zeros
    return Listing(members, others, _damage(stop, stop + rest, clean, error, last), stop + rest)


def _unreadable(e: Exception):
    from pipeline.tars import Skip

    return Skip(None, "unreadable", f"{type(e).__name__}: {e}")


class Streams:
    """One forward-moving decompressing stream per gzip'd shard (the few read last in this process): reading a
    member before the stream's position opens it again, so readers ask in offset order."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._open: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path, offset: int, size: int) -> bytes:
        key = str(path)
        with self._lock:
            entry = self._open.pop(key, None)
            if entry is None or entry[0].tell() > offset:
                if entry is not None:
                    self._close(entry)
                entry = open_stream(path)
            self._open[key] = entry
            while len(self._open) > self.keep:
                self._close(self._open.popitem(last=False)[1])
            f = entry[0]
            try:
                f.seek(offset)
                data = f.read(size)
            except (EOFError, zlib.error) as e:
                self._close(self._open.pop(key))
                raise OSError(f"the gzip stream breaks before the member's end: {_error(e)}") from None
        if len(data) != size:
            raise OSError(f"member cut short: {len(data)} of {size} bytes")
        return data

    @staticmethod
    def _close(entry) -> None:
        for f in entry:
            f.close()


STREAMS = Streams()
