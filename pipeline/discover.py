"""Stage 1, finding, for the `classes` layout: the photos of one split of a class-per-folder tree (ImageNet's),
labelled.

`<root>/<split>/<wnid>/**/<file>`: every regular, non-hidden file below a class folder is a source (a
file that turns out not to be an image is skipped later, with its reason, never silently dropped).
Class index = line number of the wnid in `<root>/synsets.txt` (`wnid name` per line, the standard
ImageNet order) when that file exists, else the position of the folder in the sorted folder list. A
folder whose wnid is missing from synsets.txt gets label -1 (unknown). Symbolic links to directories
are not followed (no loops); links to files are.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One input: its path relative to the source root and its class; a tar member (`pipeline.tars`) also
    carries where its data lies in the shard."""

    path: str
    wnid: str
    label: int
    offset: int = -1
    size: int = -1


def read_source(root: Path, src: Source) -> bytes:
    """The bytes of a source: a file, or a tar member read in place."""
    if src.offset >= 0:
        from pipeline.tars import read_member

        shard = src.path[: src.path.index(".tar/") + 4]
        return read_member(Path(root) / shard, src.offset, src.size)
    return (Path(root) / src.path).read_bytes()


def read_path(root: Path, path: str) -> bytes:
    """The bytes of a source named as a store records it: a file, or `<shard>.tar/<member>`."""
    if ".tar/" in path:
        from pipeline.tars import member_location

        shard, member = path.split(".tar/", 1)
        offset, size = member_location(Path(root) / f"{shard}.tar", member)
        return read_source(root, Source(path, "", -1, offset, size))
    return (Path(root) / path).read_bytes()


def read_synsets(path: Path) -> list[str]:
    """The wnids of a `wnid name` file, in order."""
    wnids = []
    for line in path.read_text().splitlines():
        if line.strip():
            wnids.append(line.split()[0])
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path} lists a wnid twice")
    return wnids


def read_classes(spec: str | None) -> tuple[str, ...] | None:
    """A class subset from a comma-separated list of wnids or a file of them (one per line, `wnid ...`)."""
    if not spec:
        return None
    path = Path(spec)
    if path.is_file():
        names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"the class subset {spec!r} is empty")
    return tuple(names)


def walk(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below folder, sorted (hidden folders are passed over)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                files.append(Path(dirpath) / name)
    return sorted(files)


def discover(
    root: Path, split: str, classes: tuple[str, ...] | None = None, per_class: int | None = None, seed: int = 0
) -> tuple[list[Source], list[str]]:
    """The sources of `root/split`, sorted by class then path, and the class list that gave the labels.

    `classes` keeps only those wnids (all must exist); `per_class` keeps at most that many files of each
    class, drawn with `seed` and the wnid (so a subset does not change the draw), kept in path order.
    """
    root = Path(root)
    base = root / split
    if not base.is_dir():
        raise FileNotFoundError(f"no split folder {base}")
    folders = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    synsets = root / "synsets.txt"
    class_list = read_synsets(synsets) if synsets.is_file() else folders
    index = {w: i for i, w in enumerate(class_list)}
    if classes is not None:
        missing = sorted(set(classes) - set(folders))
        if missing:
            raise ValueError(f"classes not found under {base}: {', '.join(missing[:5])}")
        folders = [f for f in folders if f in set(classes)]
    sources = []
    for wnid in folders:
        files = walk(base / wnid)
        if per_class is not None and len(files) > per_class:
            keep = set(random.Random(f"{seed}:{wnid}").sample(range(len(files)), per_class))
            files = [f for i, f in enumerate(files) if i in keep]
        label = index.get(wnid, -1)
        sources += [Source(f.relative_to(root).as_posix(), wnid, label) for f in files]
    return sources, class_list
