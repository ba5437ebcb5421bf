"""WebDataset tar shards as sources, read in place: nothing is extracted.

A shard is an uncompressed tar whose members are grouped by key: the member name up to the first dot of its
base name (`n01440764_10026.jpg`, `n01440764_10026.cls` -> key `n01440764_10026`). A sample is an image
(`jpg`, `jpeg`, `png`, `webp`) with an optional label: `cls` (the integer class index), or `txt` / `json`
holding the wnid (a JSON string, or an object with "wnid"). Each image becomes a source whose path is
`<shard>.tar/<member>` and which carries the offset and size of the member's data, so that a part task reads
its members with a seek each. What cannot become a sample is recorded with its reason.
"""

import functools
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTS = ("cls", "txt", "json")


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its data in the file
    size: int


def index_tar(path: Path) -> tuple[list[Member], str | None]:
    """The regular members of a tar in order, and why the listing stopped early (None if it did not): a
    truncated or damaged archive keeps the members before the break; a member cut short is left out."""
    members: list[Member] = []
    error = None
    try:
        with tarfile.open(path, "r:") as tf:  # uncompressed: members are read in place
            for m in tf:
                if m.isfile():
                    members.append(Member(m.name, m.offset_data, m.size))
    except (tarfile.TarError, EOFError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    end = os.path.getsize(path)
    if members and members[-1].offset + members[-1].size > end:
        members.pop()
        error = error or "the last member is cut short"
    return members, error


@functools.lru_cache(maxsize=64)
def _locations(path: Path, mtime: float) -> dict[str, tuple[int, int]]:
    return {m.name: (m.offset, m.size) for m in index_tar(path)[0]}


def member_location(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) of a member's data, from the shard's index (kept for the 64 shards last asked about)."""
    where = _locations(Path(path), os.path.getmtime(path)).get(name)
    if where is None:
        raise FileNotFoundError(f"no member {name!r} in {path}")
    return where


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the extension is everything after the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_member(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"member cut short: {len(data)} of {size} bytes")
    return data


def samples(path: Path) -> tuple[list[tuple[str, Member, str | int | None]], list[tuple[str, str, str]], str | None]:
    """The samples of one shard: (key, image member, label or None) in member order; the skipped keys as
    (name, kind, reason); and why the shard's listing stopped early, if it did."""
    members, error = index_tar(path)
    groups: dict[str, dict[str, Member]] = {}
    for m in members:
        key, ext = split_key(m.name)
        groups.setdefault(key, {})[ext] = m
    out, skipped = [], []
    for key, parts in groups.items():
        images = [parts[e] for e in IMAGE_EXTS if e in parts]
        if not images:
            skipped.append((key, "no_image", f"no image member for key {key!r} (members: {', '.join(sorted(parts))})"))
            continue
        try:
            label = _label(path, parts)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            skipped.append((images[0].name, "bad_label", f"unreadable label: {type(e).__name__}: {e}"))
            continue
        out.append((key, images[0], label))
    return out, skipped, error


def _label(path: Path, parts: dict[str, Member]) -> str | int | None:
    """The sample's class: an int (a `cls` member) or a wnid (`txt`, `json`), or None."""
    for ext in LABEL_EXTS:
        if ext in parts:
            text = read_member(path, parts[ext].offset, parts[ext].size).decode("utf-8").strip()
            if ext == "cls":
                return int(text)
            if ext == "txt":
                return text.split()[0]
            value = json.loads(text)
            return value if isinstance(value, str) else value.get("wnid", value.get("cls"))
    return None
