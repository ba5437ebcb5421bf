"""A tar shard's samples: its members grouped by key (WebDataset's rule), each an image with the label beside it
or in its class's name; what cannot be a sample is recorded with its reason (the listing itself: tars.py)."""

from dataclasses import replace
from pathlib import PurePosixPath

from pipeline.labels import MAX_CLASSES, BadLabel, parse_label
from pipeline.labels import short as _short
from pipeline.tars import (
    IMAGE_EXTS,
    LABEL_EXTS,
    MAX_LABEL_BYTES,
    Listing,
    Member,
    Sample,
    Skip,
    _listings,
    read_member,
    split_key,
)


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
