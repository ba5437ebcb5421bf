"""Stage 1 for every layout: which files of a source make the split, with their classes.

- `classes`: SOURCE/<split>/<wnid>/** (ImageNet train), `pipeline.discover.discover`;
- `flat`: image files under SOURCE/<split>/ (ImageNet val as distributed), labelled by `--labels FILE` or by
  `LOC_val_solution.csv` at SOURCE's root (`ImageId,PredictionString`, wnid first) or by lines of
  `filename wnid`; without labels every label is -1;
- `list`: `--list FILE`, one path per line relative to SOURCE, an optional wnid after it;
- `tar`: WebDataset shards, SOURCE/<split>/*.tar or SOURCE/*.tar (`pipeline.tars`).
`auto` detects the layout and says what it found when none fits. Label = the wnid's line in SOURCE/synsets.txt
when present, else its place among the sorted wnids found. What cannot be a source is recorded as a skip.
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
        from pipeline.tars import samples

        entries, skipped = [], []
        base = _split_dir(root, cfg.split)
        for shard in sorted(base.glob("*.tar")):
            rel = shard.relative_to(root).as_posix()
            found, bad, error = samples(shard)
            entries += [(f"{rel}/{m.name}", label, m.offset, m.size) for _, m, label in found]
            skipped += [_skip(f"{rel}/{name}", kind, reason) for name, kind, reason in bad]
            if error:
                skipped.append(_skip(rel, "truncated_archive", f"listing stopped after {len(found)} samples: {error}"))
    else:
        entries, skipped = _flat(root, cfg) if layout == "flat" else _listed(root, cfg.list)
    sources, classes = _labelled(root, entries)
    return Found(_select(sources, cfg.classes, cfg.per_class, cfg.seed), classes, layout, skipped)


def _skip(path: str, kind: str, reason: str) -> dict:
    return {"path": path, "wnid": "", "label": -1, "outcome": "skipped", "kind": kind, "reason": reason}


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
    """Entries of a list file: `path [wnid]` per line (blank lines and # comments passed over)."""
    entries, skipped = [], []
    top = root.resolve()
    for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        path = (root / words[0]).resolve()
        if len(words) > 2:
            skipped.append(_skip(words[0], "bad_line", f"line {n} of {list_file}: more than a path and a wnid"))
        elif not path.is_relative_to(top):
            skipped.append(_skip(words[0], "bad_line", f"line {n} of {list_file}: outside {root}"))
        elif not path.is_file():
            skipped.append(_skip(words[0], "missing", f"line {n} of {list_file}: no such file"))
        else:
            entries.append((path.relative_to(top).as_posix(), words[1] if len(words) > 1 else None, -1, -1))
    return entries, skipped


def _labelled(root: Path, entries: list) -> tuple[list[Source], list[str]]:
    """Sources from (path, wnid | class index | None, offset, size), labelled by synsets.txt or the wnids found."""
    synsets = root / "synsets.txt"
    wnids = sorted({w for _, w, _, _ in entries if isinstance(w, str)})
    classes = read_synsets(synsets) if synsets.is_file() else wnids
    index = {w: i for i, w in enumerate(classes)}
    sources = []
    for path, label, offset, size in entries:
        if isinstance(label, int):  # a class index (`cls`): its wnid when the class list names it
            wnid = classes[label] if synsets.is_file() and 0 <= label < len(classes) else ""
            sources.append(Source(path, wnid, label, offset, size))
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
