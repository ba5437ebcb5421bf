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
import os
import stat
import tarfile
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from pipeline.common.objects import Seekable
from pipeline.common.storage import ObjectPath
from pipeline.labels import MAX_CLASSES, BadLabel, parse_label
from pipeline.labels import short as _short

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


class _NotAFile(OSError):
    pass


def _open(path):
    """(an open file, its size) of a shard: a RangeFile over an object (header by header with ranged reads, never
    downloaded whole), or the local file; _NotAFile for a local path that is not a regular file."""
    if isinstance(path, ObjectPath):
        f = path.open("rb")
        return f, f.size
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
        raise _NotAFile(path)
    f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    return f, os.fstat(f.fileno()).st_size


def index_tar(path) -> Listing:
    """List a shard's members, and check where the listing stopped against the file's end."""
    return index_archive(path)[0]


def index_archive(path) -> tuple[Listing, dict[str, Listing]]:
    """The shard's listing, and the listing of each tar inside it (ImageNet's train archive holds one tar per
    class), by member name, its offsets those of the shard: each read in place through a window, nothing
    extracted."""
    try:
        f, end = _open(path)
    except _NotAFile:
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
    stamp = path.stat().st_size if isinstance(path, ObjectPath) else os.path.getmtime(path)
    where = _locations(path, stamp).get(name)
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
    if isinstance(path, ObjectPath):
        data = path.read_range(offset, size)
    else:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise OSError(f"member cut short: {len(data)} of {size} bytes")
    return data


def samples(path, n_classes: int | None = None) -> tuple[list[Sample], list[Skip]]:
    """The samples of one shard and the skips of its members, both in shard order, then the shard's own record
    if its listing ended early. A tar inside the shard is read as a shard of its own, its members named
    `<inner>.tar/<member>` and their samples' `container` that tar's name. n_classes: the length of the class
    list that `cls` indices must fall in."""
    outer, inner = _listings(path)
    bound = MAX_CLASSES if n_classes is None else min(n_classes, MAX_CLASSES)
    top = replace(outer, members=[m for m in outer.members if m.name not in inner])
    out, skipped = _samples_of(path, top, "", PurePosixPath(str(path)).name, bound)
    for name, listing in inner.items():
        prefixed = replace(listing, members=[replace(m, name=f"{name}/{m.name}") for m in listing.members],
                           others=[replace(o, name=f"{name}/{o.name}") for o in listing.others])  # fmt: skip
        found, skips = _samples_of(path, prefixed, name, name, bound)
        out += found
        skipped += skips
    skipped.sort(key=lambda s: (s.at, s.name is None))
    if outer.damage:
        skipped.append(replace(outer.damage, reason=f"{outer.damage.reason}; {len(out)} samples kept"))
    return out, skipped


def _samples_of(path, listing: Listing, name: str, container: str, bound: int) -> tuple[list[Sample], list[Skip]]:
    """The samples and skips of one tar's listing (the shard's, or a tar inside it, `name`)."""
    skipped = list(listing.others)
    last = {m.name: k for k, m in enumerate(listing.members)}
    groups: dict[str, list[Member]] = {}
    for k, m in enumerate(listing.members):
        if not _utf8(m.name):  # it could not be stored as a path
            skipped.append(Skip(m.name, "bad_name", "the member's name is not UTF-8", at=m.offset))
        elif last[m.name] != k:
            skipped.append(Skip(m.name, "duplicate_member", "the name is used again later in the shard", at=m.offset))
        else:
            groups.setdefault(split_key(m.name)[0], []).append(m)
    out = []
    for key, members in groups.items():
        sample, skips = _sample(path, key, members, listing.end, bound)
        out += [replace(sample, container=container)] if sample else []
        skipped += skips
    if name and listing.damage:  # a tar inside the shard: recorded under its name, the rest of the shard kept
        at = min([m.offset for m in listing.members], default=listing.end)
        skipped.append(replace(listing.damage, name=name, reason=f"{listing.damage.reason}; {len(out)} samples kept",
                               at=at))  # fmt: skip
    return out, skipped


def _sample(path, key: str, members: list[Member], end: int, bound: int) -> tuple[Sample | None, list[Skip]]:
    """A key's sample, and the skips of its members that are not part of it."""
    exts = {m.name: split_key(m.name)[1] for m in members}
    images = sorted((m for m in members if exts[m.name] in IMAGE_EXTS), key=lambda m: IMAGE_EXTS.index(exts[m.name]))
    labels = sorted((m for m in members if exts[m.name] in LABEL_EXTS), key=lambda m: LABEL_EXTS.index(exts[m.name]))
    if not images:
        reason = f"no image member for key {_short(key)} (members: {_short(', '.join(exts))})"
        return None, [Skip(m.name, "no_image", reason, at=m.offset) for m in members]
    image, label_member = images[0], labels[0] if labels else None
    used = {image.name, label_member and label_member.name}
    skips = [
        Skip(m.name, "unused_member", _unused(m, image, label_member), at=m.offset)
        for m in members
        if m.name not in used
    ]
    covers = (label_member.name,) if label_member else ()
    if image.offset + image.size > end:
        reason = f"the file ends inside it: {max(0, end - image.offset)} of {image.size} bytes"
        return None, [*skips, Skip(image.name, "truncated_member", reason, covers, image.offset)]
    try:
        label = _read_label(path, label_member, bound) if label_member else None
    except BadLabel as e:
        return None, [*skips, Skip(image.name, "bad_label", f"{_short(label_member.name)}: {e}", covers, image.offset)]
    return Sample(key, image, label, label_member and label_member.name), skips


def _unused(m: Member, image: Member, label: Member | None) -> str:
    ext = split_key(m.name)[1]
    if ext in IMAGE_EXTS:
        return f"the key's image is {_short(image.name)}"
    if ext in LABEL_EXTS:
        return f"the key's label is read from {_short(label and label.name)}"
    return f"neither an image nor a label (extension {_short(ext)})"


def _read_label(path, m: Member, bound: int) -> str | int:
    if m.size > MAX_LABEL_BYTES:
        raise BadLabel(f"{m.size} bytes, more than a label's {MAX_LABEL_BYTES}")
    try:
        data = m.data if m.data is not None else read_member(path, m.offset, m.size)
    except OSError as e:
        raise BadLabel(f"unreadable: {e}") from None
    return parse_label(split_key(m.name)[1], data, bound)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
