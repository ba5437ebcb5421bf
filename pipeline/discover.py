"""Stage 1, finding, for the `classes` layout: the photos of one split of a class-per-folder tree (ImageNet's),
labelled.

`<root>/<split>/<wnid>/**/<file>`: every regular, non-hidden file below a class folder is a source (a
file that turns out not to be an image is skipped later, with its reason, never silently dropped).
Class index = line number of the wnid in `<root>/synsets.txt` (`wnid name` per line, the standard
ImageNet order) when that file exists, else the position of the folder in the sorted folder list. A
folder whose wnid is missing from synsets.txt gets label -1 (unknown). Symbolic links to directories
are not followed (no loops); links to files are.
"""

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.common.cli import Refused, one_line
from pipeline.storage import location
from pipeline.storage.files import files_below, read_file


@dataclass(frozen=True)
class Source:
    """One input: its path relative to the source root and its class; a tar member (`pipeline.tars`) also
    carries where its data lies in the shard."""

    path: str
    wnid: str
    label: int
    offset: int = -1
    size: int = -1


def read_source(root, src: Source) -> bytes:
    """The bytes of a source: a file, or a tar member read in place (a ranged read in an object store)."""
    root = location(root)
    if ".parquet/" in src.path:  # a row: its row group and its place in it
        from pipeline.parquet import ROW_GROUPS

        return ROW_GROUPS.row(root / src.path[: src.path.index(".parquet/") + 8], src.offset, src.size)
    if src.offset >= 0:
        from pipeline.gztars import split_member
        from pipeline.tars import read_member

        shard, _ = split_member(src.path)
        return read_member(root / shard, src.offset, src.size)
    return read_file(root / src.path)


def read_sources(root, sources: list[Source], pool=None) -> list[tuple[bytes | None, str]]:
    """(bytes, "") or (None, why it could not be read) per source, in order; with a thread pool, fetched at once
    (for object stores, whose answers take tens of ms each). Members of gzip'd shards are read here, in their
    order in the shard, so that its stream only moves forward."""
    from pipeline.gztars import is_gz, split_member

    def one(src: Source) -> tuple[bytes | None, str]:
        try:
            return read_source(root, src), ""
        except OSError as e:
            return None, f"unreadable file: {type(e).__name__}: {e.strerror or e}"

    def streamed(src: Source) -> bool:
        return src.offset >= 0 and is_gz((split_member(src.path) or ("",))[0])

    out: list = [None] * len(sources)
    serial = [k for k, s in enumerate(sources) if streamed(s)]
    for k in sorted(serial, key=lambda k: (split_member(sources[k].path)[0], sources[k].offset)):
        out[k] = one(sources[k])
    rest = [k for k in range(len(sources)) if out[k] is None]
    got = pool.map(one, [sources[k] for k in rest]) if pool is not None else map(one, [sources[k] for k in rest])
    for k, value in zip(rest, got, strict=True):
        out[k] = value
    return out


def read_path(root, path: str) -> bytes:
    """The bytes of a source named as a store records it: a file, or `<shard>.tar/<member>`."""
    root = location(root)
    if ".parquet/" in path:
        from pipeline.parquet import locate

        shard, row = path.split(".parquet/", 1)
        group, at = locate(root / f"{shard}.parquet", int(row))
        return read_source(root, Source(path, "", -1, group, at))
    from pipeline.gztars import split_member

    found = split_member(path)
    if found is not None:
        from pipeline.tars import member_location

        shard, member = found
        offset, size = member_location(root / shard, member)
        return read_source(root, Source(path, "", -1, offset, size))
    return read_file(root / path)


def subfolders(folder) -> list[str]:
    """The names of the non-hidden folders directly in `folder` (one listing in an object store)."""
    names = location(folder).subfolders()
    return sorted(n for n in names if not n.startswith("."))


def read_lines(path) -> list[str]:
    """The lines of a text file a user gives (synsets, a class subset, labels, a list); Refused, naming the file,
    for bytes that are not UTF-8 text."""
    try:
        return path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise Refused(f"{path}: not a text file ({one_line(e)})") from None


def read_synsets(path) -> list[str]:
    """The wnids of a `wnid name` file, in order."""
    wnids = []
    for line in read_lines(path):
        if line.strip():
            wnids.append(line.split()[0])
    if len(set(wnids)) != len(wnids):
        raise Refused(f"{path} lists a wnid twice")
    return wnids


def read_classes(spec: str | None) -> tuple[str, ...] | None:
    """A class subset from a comma-separated list of wnids or a file of them (one per line, `wnid ...`)."""
    if not spec:
        return None
    path = location(spec) if "," not in spec else None
    if path is not None and path.is_file():
        names = [line.split()[0] for line in read_lines(path) if line.strip()]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise Refused(f"the class subset {spec!r} is empty")
    return tuple(names)


def discover(
    root, split: str, classes: tuple[str, ...] | None = None, per_class: int | None = None, seed: int = 0
) -> tuple[list[Source], list[str]]:
    """The sources of `root/split`, sorted by class then path, and the class list that gave the labels.

    `classes` keeps only those wnids (all must exist); `per_class` keeps at most that many files of each
    class, drawn with `seed` and the wnid (so a subset does not change the draw), kept in path order.
    """
    root = location(root)
    base = root / split
    if not base.is_dir():
        raise FileNotFoundError(f"no split folder {base}")
    from pipeline.imagenet import class_file

    folders = subfolders(base)
    synsets = class_file(root)
    class_list = read_synsets(synsets) if synsets is not None else folders
    index = {w: i for i, w in enumerate(class_list)}
    if classes is not None:
        missing = sorted(set(classes) - set(folders))
        if missing:
            raise Refused(f"classes not found under {base}: {', '.join(missing[:5])}")
        folders = [f for f in folders if f in set(classes)]
    with ThreadPoolExecutor(location(base).parallel(16)) as pool:  # a listing per class, at once in a bucket
        listed = list(pool.map(lambda wnid: files_below(base / wnid), folders))
    sources = []
    for wnid, files in zip(folders, listed, strict=True):
        if per_class is not None and len(files) > per_class:
            keep = set(random.Random(f"{seed}:{wnid}").sample(range(len(files)), per_class))
            files = [f for i, f in enumerate(files) if i in keep]
        label = index.get(wnid, -1)
        sources += [Source(f"{split}/{wnid}/{rel}", wnid, label) for rel in files]
    return sources, class_list
