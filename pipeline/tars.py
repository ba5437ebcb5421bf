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
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass, replace

from pipeline.common.storage import ObjectPath

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTS = ("cls", "txt", "json")
MAX_CLASSES = 32768  # labels are stored as int16
MAX_LABEL_BYTES = 1 << 20
MAX_WNID = 256
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


class BadLabel(ValueError):
    pass


def index_tar(path) -> Listing:
    """List a shard's members, and check where the listing stopped against the file's end. A shard in an object
    store is read through a RangeFile: header by header with ranged reads, never downloaded whole."""
    try:
        if isinstance(path, ObjectPath):
            f = path.open("rb")
            end = f.size
        else:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
                return Listing([], [], Skip(None, "not_a_file", "the shard is not a regular file"), 0)
            f = open(path, "rb")  # noqa: SIM115 - closed below
            end = os.fstat(f.fileno()).st_size
        with f:
            members, others = [], []
            stop, error, last = _walk(f, members, others)
            clean = error is None and end - stop >= BLOCK and _zeros_to_end(f, stop)  # one whole zero block at least
    except OSError as e:
        return Listing([], [], Skip(None, "unreadable", f"{type(e).__name__}: {e}"), 0)
    return Listing(members, others, _damage(stop, end, clean, error, last), end)


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


@functools.lru_cache(maxsize=64)
def _locations(path, stamp: float) -> dict[str, tuple[int, int]]:
    return {m.name: (m.offset, m.size) for m in index_tar(path).members}  # the last copy of a name, as read


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
    if its listing ended early. n_classes: the length of the class list that `cls` indices must fall in."""
    listing = index_tar(path)
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
    bound = MAX_CLASSES if n_classes is None else min(n_classes, MAX_CLASSES)
    out = []
    for key, members in groups.items():
        sample, skips = _sample(path, key, members, listing.end, bound)
        out += [sample] if sample else []
        skipped += skips
    skipped.sort(key=lambda s: s.at)
    if listing.damage:
        skipped.append(replace(listing.damage, reason=f"{listing.damage.reason}; {len(out)} samples kept"))
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


def parse_label(ext: str, data: bytes, bound: int = MAX_CLASSES) -> str | int:
    """The label in a `cls`, `txt` or `json` member's bytes (the forms in the module docstring), or BadLabel."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadLabel(f"not UTF-8 text: {_short(data)}") from None
    if ext == "cls":
        digits = text.strip()
        if not re.fullmatch(r"-?[0-9]+", digits):
            raise BadLabel(f"not an integer class index: {_short(text)}")
        return _index(int(digits) if len(digits) <= 12 else bound, bound, digits)  # longer: out of range
    if ext == "txt":
        words = text.split(maxsplit=1)
        if not words:
            raise BadLabel(f"no word in the text: {_short(text)}")
        return _wnid(words[0])
    try:
        value = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any text: ValueError, RecursionError on deep nesting, ...
        raise BadLabel(f"not JSON ({type(e).__name__}): {_short(text)}") from None
    if isinstance(value, str):
        return _wnid(value)
    if isinstance(value, dict) and "wnid" in value:
        return _wnid(value["wnid"], text)
    if isinstance(value, dict) and "cls" in value:
        if not isinstance(value["cls"], int) or isinstance(value["cls"], bool):
            raise BadLabel(f'"cls" is not an integer: {_short(text)}')
        return _index(value["cls"], bound, text)
    raise BadLabel(f'neither a wnid string nor an object with "wnid" or "cls": {_short(text)}')


def _index(value: int, bound: int, found: str) -> int:
    if not 0 <= value < bound:
        raise BadLabel(f"class index out of [0, {bound}): {_short(found)}")
    return value


def _wnid(value, found: str | None = None) -> str:
    """value if it is a wnid; found: the text it came from, shown instead (a JSON value may nest deeply)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_WNID or not value.isprintable() or " " in value:
        shown = _short(found if found is not None else value)
        raise BadLabel(f"not a wnid (1 to {MAX_WNID} printable characters, no spaces): {shown}")
    return value


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value, n: int = 60) -> str:
    """repr of a value found in a shard, cut to about n characters."""
    text = repr(value[: n + 1] if isinstance(value, str | bytes) else value)
    return text if len(text) <= n else text[: n - 3] + "..."
