"""WebDataset tar shards as sources, read in place: nothing is extracted.

A shard is an uncompressed tar whose members are grouped by key: the member name up to the first dot of its
base name (`n01440764_10026.jpg`, `n01440764_10026.cls` -> key `n01440764_10026`). A sample is a key's image
(the first of `jpg`, `jpeg`, `png`, `webp` present) with an optional label, read from the first of `cls`,
`txt`, `json` present. Each image becomes a source whose path is `<shard>.tar/<member>` and which carries the
offset and size of the member's data, so that a part task reads its members with a seek each.

Labels accepted (UTF-8, a BOM allowed, at most 1 MiB; anything else is a `bad_label` skip naming what it held):
- `cls`: an integer class index, ASCII digits with blanks around them, in [0, 32767] (labels are int16), or
  in [0, len(classes)) when SOURCE/synsets.txt gives the class list, because the label must name one of them;
- `txt`: the first word of the text, the wnid;
- `json`: a string, the wnid; or an object whose "wnid" is a string (used when present), else whose "cls" is
  an integer index as for `cls`.
A wnid is 1 to 256 printable characters without spaces.

Every member is accounted for: it is a sample's image, a sample's label, or a skip with its reason. Skips:
`not_a_file` (directories, links, devices, FIFOs, sparse or unknown member types: none holds a photo in
place), `bad_name` (a name that is not UTF-8), `duplicate_member` (a name used again later: the later copy
is read, as tar extracts it), `no_image` (a member whose key has no image), `unused_member` (a key's second
image or label, or a member neither image nor label), `bad_label`, `truncated_member` (an image that the end
of the file cuts short). A shard whose listing ends early is recorded itself, its samples before the break
kept: `truncated_archive` (the file ends inside a member or header, or lacks the end-of-archive
blocks), `damaged_archive` (tarfile stopped at an
unreadable header with data after it: it ends such a listing silently, so the bytes left are checked),
`unreadable` or `not_a_file` (the shard cannot be opened as a file).
"""

import functools
import tarfile
from dataclasses import dataclass, replace

from pipeline.labels import short as _short
from pipeline.storage import NotRegular, location
from pipeline.storage.ranged import Seekable

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTS = ("cls", "txt", "json")
MAX_LABEL_BYTES = 1 << 20
BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its data in the file
    size: int
    data: bytes | None = None  # a label's bytes, read while the listing passed them (no second read remotely)


@dataclass(frozen=True)
class Sample:
    key: str
    image: Member
    label: str | int | None
    label_member: str | None = None  # the member the label was read from
    container: str = ""  # the tar the sample lies in: the shard, or a tar inside it (its name may be the class)


@dataclass(frozen=True)
class Skip:
    name: str | None  # the member recorded; None: the shard itself
    kind: str
    reason: str
    covers: tuple[str, ...] = ()  # other members this record accounts for (a skipped sample's label)
    at: int = 0  # where the member lies in the shard: records follow the shard's order


@dataclass(frozen=True)
class Listing:
    members: list[Member]  # regular members in shard order; the last may run past the end of the file
    others: list[Skip]  # the members that are not regular files
    damage: Skip | None  # why the listing ended early, if it did
    end: int  # the file's size


def index_tar(path) -> Listing:
    """List a shard's members, and check where the listing stopped against the file's end."""
    return index_archive(path)[0]


def index_archive(path) -> tuple[Listing, dict[str, Listing]]:
    """The shard's listing, and the listing of each tar inside it (ImageNet's train archive holds one tar per
    class), by member name, its offsets those of the shard: each read in place through a window, nothing
    extracted."""
    try:
        f, end = location(path).open_sized()  # in a bucket, header by header with ranged reads, never downloaded whole
    except NotRegular:
        return Listing([], [], Skip(None, "not_a_file", "the shard is not a regular file"), 0), {}
    except OSError as e:
        return Listing([], [], Skip(None, "unreadable", f"{type(e).__name__}: {e}"), 0), {}
    try:
        with f:
            outer = index_file(f, end)
            inner = {}
            for m in outer.members:
                if is_inner_tar(m.name) and m.offset + m.size <= end:
                    listing = index_file(Window(f, m.offset, m.size), m.size)
                    inner[m.name] = _shifted(listing, m.offset)
    except OSError as e:
        return Listing([], [], Skip(None, "unreadable", f"{type(e).__name__}: {e}"), 0), {}
    return outer, inner


def is_inner_tar(name: str) -> bool:
    return name.lower().endswith(".tar")


def index_file(f, end: int) -> Listing:
    """The listing of the tar in `f`, a file of `end` bytes."""
    members, others = [], []
    stop, error, last = _walk(f, members, others)
    clean = error is None and end - stop >= BLOCK and _zeros_to_end(f, stop)  # one whole zero block at least
    return Listing(members, others, _damage(stop, end, clean, error, last), end)


def _shifted(listing: Listing, by: int) -> Listing:
    """A listing of a tar inside a shard with its offsets made the shard's."""
    members = [replace(m, offset=m.offset + by) for m in listing.members]
    others = [replace(o, at=o.at + by) for o in listing.others]
    return Listing(members, others, listing.damage, listing.end + by)


class Window(Seekable):
    """A read-only, seekable view of `size` bytes of an open file from `start`: a member read as a file."""

    def __init__(self, f, start: int, size: int):
        super().__init__()
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readinto(self, buffer) -> int:
        n = min(len(buffer), max(0, self.size - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _walk(f, members: list[Member], others: list[Skip]) -> tuple[int, str | None, str | None]:
    """Fill members and others from the tar in f: (offset where the listing stopped, the error that stopped
    it, the last member's name)."""
    last = None
    try:
        tf = tarfile.open(fileobj=f, mode="r:")  # uncompressed: members are read in place
    except Exception as e:  # noqa: BLE001 - a shard can hold any bytes, and tarfile fails on them in many ways
        return 0, _error(e), last
    with tf:
        while True:
            try:
                m = tf.next()
            except Exception as e:  # noqa: BLE001 - as above
                return tf.offset, _error(e), last
            if m is None:
                return tf.offset, None, last
            if m.size < 0 or tf.offset <= m.offset:  # tarfile would go back to this header, forever
                return m.offset, f"member {_short(m.name)} declares {m.size} bytes", last
            last = m.name
            if m.isreg() and not m.issparse():
                members.append(Member(m.name, m.offset_data, m.size, _label_bytes(f, m)))
            else:
                others.append(Skip(m.name, "not_a_file", f"the member is {_member_type(m)}", at=m.offset))


def _label_bytes(f, m: tarfile.TarInfo) -> bytes | None:
    """A label member's data, read right after its header (tarfile seeks back to its next header itself)."""
    if split_key(m.name)[1] not in LABEL_EXTS or m.size > MAX_LABEL_BYTES:
        return None
    f.seek(m.offset_data)
    data = f.read(m.size)
    return data if len(data) == m.size else None


def _member_type(m: tarfile.TarInfo) -> str:
    if m.issym() or m.islnk():
        return f"a {'symbolic' if m.issym() else 'hard'} link to {_short(m.linkname)}"
    for kind, what in (
        (m.isdir(), "a directory"),
        (m.ischr(), "a character device"),
        (m.isblk(), "a block device"),
        (m.isfifo(), "a FIFO"),
        (m.issparse(), "a sparse file (its data is not stored in one piece)"),
    ):
        if kind:
            return what
    return f"of unknown type {m.type!r}"


def _error(e: Exception) -> str:
    return _short(f"{type(e).__name__}: {e}", 120)


def _zeros_to_end(f, start: int) -> bool:
    """Whether only zero bytes follow start: the end-of-archive blocks and padding of a clean archive."""
    f.seek(start)
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _damage(stop: int, end: int, clean: bool, error: str | None, last: str | None) -> Skip | None:
    """The record of a listing that ended early, or None: it stopped at `stop` (past `end` when the last
    member's data runs past the end of the file); clean: only zero bytes after it and no error raised."""
    if stop > end:
        return Skip(None, "truncated_archive", f"the file ends at byte {end}, inside member {_short(last)}")
    if clean:
        return None
    if end == 0:
        return Skip(None, "truncated_archive", "the file is empty")
    if stop == end and error is None:  # every tar writer ends with zero blocks: a file without them was cut
        return Skip(None, "truncated_archive", f"the file ends at byte {end} without the end-of-archive blocks")
    unread = end - stop
    if unread < BLOCK:
        return Skip(None, "truncated_archive", f"the file ends at byte {end}, inside a header at byte {stop}")
    why = error or "an unreadable header, or a member whose size is wrong"
    return Skip(None, "damaged_archive", f"listing stopped at byte {stop} ({why}): {unread} bytes not read")


def _listings(path) -> tuple[Listing, dict[str, Listing]]:
    """A shard's listing and those of the tars inside it; a gzip'd shard's, decompressed once (no tars inside)."""
    from pipeline.gztars import index_gz, is_gz

    return (index_gz(path), {}) if is_gz(path) else index_archive(path)


@functools.lru_cache(maxsize=64)
def _locations(path, stamp: float) -> dict[str, tuple[int, int]]:
    outer, inner = _listings(path)
    found = {m.name: (m.offset, m.size) for m in outer.members}  # the last copy of a name, as read
    for name, listing in inner.items():
        found |= {f"{name}/{m.name}": (m.offset, m.size) for m in listing.members}
    return found


def member_location(path, name: str) -> tuple[int, int]:
    """(offset, size) of a member's data, from the shard's index (kept for the 64 shards last asked about)."""
    where = _locations(path, location(path).stamp()).get(name)
    if where is None:
        raise FileNotFoundError(f"no member {name!r} in {path}")
    return where


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the extension is everything after the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_member(path, offset: int, size: int) -> bytes:
    """A member's data, read where it lies (a gzip'd shard's from its forward-moving stream)."""
    from pipeline.gztars import STREAMS, is_gz

    if is_gz(path):
        return STREAMS.read(path, offset, size)
    data = location(path).read_range(offset, size)
    if len(data) != size:
        raise OSError(f"member cut short: {len(data)} of {size} bytes")
    return data
