"""Stage 1, finding: which files of a source make the split, with their classes.

- `classes`: SOURCE/<split>/<wnid>/** (ImageNet train), `pipeline.discover.discover`;
- `flat`: image files under SOURCE/<split>/ (ImageNet val as distributed), labelled by `--labels FILE` or by
  `LOC_val_solution.csv` at SOURCE's root (`ImageId,PredictionString`, wnid first) or by lines of
  `filename wnid`; without labels every label is -1;
- `list`: `--list FILE`, one path per line relative to SOURCE, an optional wnid after it;
- `tar`: WebDataset shards, SOURCE/<split>/*.tar or SOURCE/*.tar (`pipeline.tars`).
`auto` detects the layout and says what it found when none fits. Label = the wnid's line in SOURCE/synsets.txt
when present (-1 when it is not there), else its place in the class list found: class indices of tar labels
first, named "0" to "K-1" (K = the largest index + 1), then the other wnids, sorted. What cannot be a source is
recorded as a skip, each with its own path (a tar member's name used twice gets `#2`, `#3`, ... appended).
"""

import random
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.discover import Source, discover, read_synsets, walk

LAYOUTS = ("auto", "classes", "flat", "list", "tar")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


@dataclass
class Found:
    """The sources of a split, in order, the class list that gave the labels, the layout read, and the skips
    recorded before decoding (records as the manifest holds them)."""

    sources: list[Source]
    classes: list[str]
    layout: str
    skipped: list[dict] = field(default_factory=list)


def _split_dir(root: Path, split: str) -> Path:
    return root / split if (root / split).is_dir() else root


def describe(base: Path) -> str:
    """What a folder holds, for error messages: loose image files, class folders, tar shards."""
    if not base.is_dir():
        return f"no folder {base}"
    images = sum(1 for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    folders = sum(1 for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    tars = sum(1 for p in base.glob("*.tar"))
    return f"{images} image files directly under {base.name}/, {folders} folders, {tars} tar shards"


def detect(root: Path, split: str, layout: str, list_file: str | None) -> str:
    """The layout to read: `layout` unless auto; a ValueError naming what was found when it does not fit."""
    if layout == "list" or (layout == "auto" and list_file):
        if not list_file:
            raise ValueError("--layout list needs --list FILE")
        return "list"
    base = _split_dir(root, split) if layout in ("auto", "tar") else root / split
    found = describe(base)
    has = {
        "tar": any(base.glob("*.tar")) if base.is_dir() else False,
        "classes": base.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in base.iterdir()),
        "flat": base.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in base.iterdir()),
    }
    if layout == "auto":
        if has["classes"] and has["flat"]:
            raise ValueError(f"{found}: both fit, choose --layout classes or --layout flat (recursive)")
        for name in ("tar", "classes", "flat"):
            if has[name]:
                return name
        raise ValueError(f"no files under {root / split} in a layout this flow reads: {found}")
    if not has[layout]:
        hint = next((f": use --layout {k}" for k, v in has.items() if v), "")
        raise ValueError(f"expected the {layout} layout under {base}, found {found}{hint}")
    return layout


def find(cfg) -> Found:
    """The sources of cfg.source/cfg.split in cfg.layout (detected when auto), filtered by classes / per_class."""
    root = Path(cfg.source)
    layout = detect(root, cfg.split, cfg.layout, cfg.list)
    if layout == "classes":
        sources, classes = discover(root, cfg.split, cfg.classes, cfg.per_class, cfg.seed)
        return Found(sources, classes, layout)
    if layout == "tar":
        entries, skipped = _tars(root, cfg.split)
    else:
        entries, skipped = _flat(root, cfg) if layout == "flat" else _listed(root, cfg.list)
    sources, classes = _labelled(root, entries)
    return Found(_select(sources, cfg.classes, cfg.per_class, cfg.seed), classes, layout, skipped)


def _skip(path: str, kind: str, reason: str) -> dict:
    return {"path": path, "wnid": "", "label": -1, "outcome": "skipped", "kind": kind, "reason": reason}


def _tars(root: Path, split: str) -> tuple[list, list]:
    """Entries and skip records of the shards. A `cls` index must name a class of synsets.txt when present."""
    from pipeline.tars import samples

    synsets = root / "synsets.txt"
    n_classes = len(read_synsets(synsets)) if synsets.is_file() else None
    entries, skipped = [], []
    for shard in sorted(_split_dir(root, split).glob("*.tar")):
        rel = shard.relative_to(root).as_posix()
        found, bad = samples(shard, n_classes)
        paths = [f"{rel}/{s.image.name}" for s in found]  # unique: a name used twice is read once
        entries += [(p, s.label, s.image.offset, s.image.size) for p, s in zip(paths, found, strict=True)]
        taken = set(paths)
        for s in bad:  # the manifest and the quality check tell records apart by path
            path = rel if s.name is None else _unique(f"{rel}/{_printable(s.name)}", taken)
            skipped.append(_skip(path, s.kind, s.reason))
    return entries, skipped


def _unique(path: str, taken: set[str]) -> str:
    out, n = path, 1
    while out in taken:
        n += 1
        out = f"{path}#{n}"
    taken.add(out)
    return out


def _printable(name: str) -> str:
    """A member name as text: bytes that are not UTF-8 (kept by tarfile as surrogates) become \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _flat(root: Path, cfg) -> tuple[list, list]:
    base = root / cfg.split
    labels = read_labels(Path(cfg.labels) if cfg.labels else root / "LOC_val_solution.csv")
    entries = []
    for f in walk(base):
        name = f.relative_to(base).as_posix()
        wnid = labels.get(name, labels.get(Path(name).stem)) if labels else None
        entries.append((f.relative_to(root).as_posix(), wnid, -1, -1))
    return entries, []


def read_labels(path: Path) -> dict[str, str]:
    """{file name or stem: wnid} from LOC_val_solution.csv (ImageNet's) or lines of `filename wnid`; {} if the
    default file is absent. A file given but unreadable raises."""
    if not path.is_file():
        if path.name == "LOC_val_solution.csv":
            return {}
        raise FileNotFoundError(f"no labels file {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    out = {}
    if lines and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        for line in lines[1:]:
            image, _, prediction = line.partition(",")
            if prediction.split():
                out[image.strip()] = prediction.split()[0]
        return out
    for line in lines:
        name, *rest = line.split()
        if rest:
            out[name] = rest[0]
    return out


def _listed(root: Path, list_file: str) -> tuple[list, list]:
    """Entries of a list file: `path [wnid]` per line (blank lines and # comments passed over). A file listed
    twice is read once; its later lines are recorded as `duplicate_line` skips, each record under its own path."""
    entries, skips, stored = [], [], set()
    top = root.resolve()
    for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        path = (root / words[0]).resolve()
        inside = path.is_relative_to(top)
        rel = path.relative_to(top).as_posix() if inside else words[0]
        where = f"line {n} of {list_file}"
        if len(words) > 2:
            skips.append((rel, "bad_line", f"{where}: more than a path and a wnid"))
        elif not inside:
            skips.append((rel, "bad_line", f"{where}: outside {root}"))
        elif not path.is_file():
            skips.append((rel, "missing", f"{where}: no such file"))
        elif rel in stored:
            skips.append((rel, "duplicate_line", f"{where}: listed before"))
        else:
            stored.add(rel)
            entries.append((rel, words[1] if len(words) > 1 else None, -1, -1))
    taken = set(stored)  # a record's path names one record: skips sharing one get `#2`, `#3`, ...
    return entries, [_skip(_unique(rel, taken), kind, reason) for rel, kind, reason in skips]


def _labelled(root: Path, entries: list) -> tuple[list[Source], list[str]]:
    """Sources from (path, wnid | class index | None, offset, size) and the class list that labels them:
    synsets.txt when present, else the indices found (named "0" to "K-1"), then the other wnids found."""
    synsets = root / "synsets.txt"
    if synsets.is_file():
        classes = read_synsets(synsets)  # pipeline.tars keeps class indices inside it
    else:  # every index found must be a class of the list, or the labels would point past its end
        classes = [str(k) for k in range(max((w + 1 for _, w, _, _ in entries if isinstance(w, int)), default=0))]
        classes += sorted({w for _, w, _, _ in entries if isinstance(w, str)} - set(classes))
    index = {w: i for i, w in enumerate(classes)}
    sources = []
    for path, label, offset, size in entries:
        if isinstance(label, int):  # a class index (`cls`): named by the class list
            sources.append(Source(path, classes[label], label, offset, size))
        else:
            sources.append(Source(path, label or "", index.get(label, -1) if label else -1, offset, size))
    return sources, classes


def _select(sources: list[Source], classes, per_class: int | None, seed: int) -> list[Source]:
    """Keep the classes asked for and at most per_class sources of each (drawn with seed and the wnid)."""
    if classes is not None:
        if not any(s.wnid for s in sources):
            raise ValueError("--classes needs labels with wnids (synsets.txt for class indices, or a labels file)")
        missing = sorted(set(classes) - {s.wnid for s in sources})
        if missing:
            raise ValueError(f"classes not found in the source: {', '.join(missing[:5])}")
        sources = [s for s in sources if s.wnid in set(classes)]
    if per_class is not None:
        by_class: dict[str, list[int]] = {}
        for k, s in enumerate(sources):
            by_class.setdefault(s.wnid, []).append(k)
        keep = set()
        for wnid, ks in by_class.items():
            keep |= set(ks if len(ks) <= per_class else random.Random(f"{seed}:{wnid}").sample(ks, per_class))
        sources = [s for k, s in enumerate(sources) if k in keep]
    return sources
