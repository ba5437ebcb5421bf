"""Stage 1, finding: which files of a source make the split, with their classes.

- `classes`: SOURCE/<split>/<wnid>/** (ImageNet train), `pipeline.discover.discover`;
- `flat`: image files under SOURCE/<split>/ (ImageNet val as distributed), labelled by `--labels FILE` or by
  `LOC_val_solution.csv` at SOURCE's root (`ImageId,PredictionString`, wnid first) or by lines of
  `filename wnid`; without labels every label is -1;
- `list`: `--list FILE`, one path per line relative to SOURCE, an optional wnid after it;
- `tar`: WebDataset shards, SOURCE/<split>/*.tar or SOURCE/*.tar (`pipeline.tars`), ImageNet's archives among them;
- `parquet`: Hugging Face Parquet shards, SOURCE/<split>/*.parquet or SOURCE/data/<split>-*.parquet
  (`pipeline.parquet`).
`auto` detects the layout and says what it found when none fits. Label = the wnid's line in SOURCE/synsets.txt
when present (-1 when it is not there), else its place in the class list found: class indices of tar labels
first, named "0" to "K-1" (K = the largest index + 1), then the other wnids, sorted. What cannot be a source is
recorded as a skip, each with its own path (a tar member's name used twice gets `#2`, `#3`, ... appended).
"""

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from pipeline.common.cli import Refused
from pipeline.discover import Source, discover, read_lines, read_synsets
from pipeline.storage import location
from pipeline.storage.files import files_below

LAYOUTS = ("auto", "classes", "flat", "list", "tar", "parquet")
TAR_SHARDS = (".tar", ".tar.gz", ".tgz")  # plain shards read in place, gzip'd ones as streams (pipeline.gztars)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


@dataclass
class Found:
    """The sources of a split, in order, the class list that gave the labels, the layout read, and the skips
    recorded before decoding (records as the manifest holds them)."""

    sources: list[Source]
    classes: list[str]
    layout: str
    skipped: list[dict] = field(default_factory=list)


def _split_dir(root, split: str):
    return root / split if (root / split).is_dir() else root


def entries(folder) -> tuple[list[str], list[str]]:
    """(folder names, other names) directly in `folder`, non-hidden folders only; one listing in an object store.
    Anything that is not a folder (a file, a FIFO, ...) is among the others, for the layouts to record."""
    folders, others = location(folder).entries()
    return sorted(f for f in folders if not f.startswith(".")), sorted(others)


def describe(base) -> str:
    """What a folder holds, for error messages: loose image files, class folders, tar shards."""
    if not base.is_dir():
        return f"no folder {base}"
    folders, files = entries(base)
    images = sum(1 for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES)
    tars = sum(1 for f in files + folders if f.endswith(TAR_SHARDS))
    return f"{images} image files directly under {base.name}/, {len(folders)} folders, {tars} tar shards"


def detect(root, split: str, layout: str, list_file: str | None) -> str:
    """The layout to read: `layout` unless auto; Refused naming what was found when it does not fit."""
    if layout == "list" or (layout == "auto" and list_file):
        if not list_file:
            raise Refused("--layout list needs --list FILE")
        return "list"
    root = location(root)
    base = _split_dir(root, split) if layout in ("auto", "tar") else root / split
    found = describe(base)
    folders, files = entries(base)
    has = {
        "tar": any(f.endswith(TAR_SHARDS) for f in files + folders),
        "parquet": bool(parquet_files(root, split)),
        "classes": bool(folders),
        "flat": any(PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES for f in files),
    }
    if layout == "auto":
        if has["classes"] and has["flat"]:
            raise Refused(f"{found}: both fit, choose --layout classes or --layout flat (recursive)")
        for name in ("tar", "parquet", "classes", "flat"):
            if has[name]:
                return name
        raise Refused(f"no files under {root / split} in a layout this flow reads: {found}")
    if not has[layout]:
        hint = next((f": use --layout {k}" for k, v in has.items() if v), "")
        raise Refused(f"expected the {layout} layout under {base}, found {found}{hint}")
    return layout


def find(cfg) -> Found:
    """The sources of cfg.source/cfg.split in cfg.layout (detected when auto), filtered by classes / per_class."""
    root = location(cfg.source)
    layout = detect(root, cfg.split, cfg.layout, cfg.list)
    if layout == "classes":
        sources, classes = discover(root, cfg.split, cfg.classes, cfg.per_class, cfg.seed)
        return Found(sources, classes, layout)
    given = None  # class names a source carries (a Parquet schema's)
    if layout == "tar":
        entries, skipped = _tars(root, cfg)
    elif layout == "parquet":
        entries, skipped, given = _parquets(root, cfg.split)
    else:
        entries, skipped = _flat(root, cfg) if layout == "flat" else _listed(root, cfg.list)
    sources, classes = _labelled(root, cfg.split, entries, given)
    return Found(_select(sources, cfg.classes, cfg.per_class, cfg.seed), classes, layout, skipped)


def _skip(path: str, kind: str, reason: str) -> dict:
    return {"path": path, "wnid": "", "label": -1, "outcome": "skipped", "kind": kind, "reason": reason}


def _tars(root, cfg) -> tuple[list, list]:
    """Entries and skip records of the shards (SOURCE/SPLIT/*.tar, or the archive SPLIT names). A sample's label
    is its own (a `cls` index must name a class of the class list when there is one); else the class its tar is
    named for (a per-class tar, alone or inside ImageNet's train archive); else its validation label by name
    (`pipeline.imagenet.val_labels`). Shards in an object store are listed at once, header by header."""
    from pipeline.imagenet import class_file, is_class, label_roots, stem, val_labels
    from pipeline.tarsamples import samples

    roots = label_roots(root, cfg.split)
    listed_classes = class_file(*roots)
    classes = read_synsets(listed_classes) if listed_classes else None
    base = _split_dir(root, cfg.split)
    if (root / cfg.split).is_file():  # an archive given as SOURCE
        shards = [root / cfg.split]
    else:
        shards = [base / f for f in sorted(sum(entries(base), [])) if f.endswith(TAR_SHARDS)]  # a folder too: recorded
    n_classes = len(classes) if classes is not None else None
    with ThreadPoolExecutor(location(root).parallel(16)) as pool:
        listed = list(pool.map(lambda shard: samples(shard, n_classes), shards))
    known = set(classes) if classes is not None else None
    named: dict[str, str | None] = {}  # a tar's name -> the class it names, or None
    by_name = None  # validation labels, read when a sample needs them
    entries_, skipped = [], []
    for shard, (found, bad) in zip(shards, listed, strict=True):
        rel = shard.relative_to(root).as_posix()
        paths = [f"{rel}/{s.image.name}" for s in found]  # unique: a name used twice is read once
        for path, s in zip(paths, found, strict=True):
            label = s.label
            if label is None:
                tar = stem(s.container)
                label = named.setdefault(tar, tar if is_class(tar, known) else None)
            if label is None:
                by_name = val_labels(roots, cfg.labels) if by_name is None else by_name
                label = by_name.get(stem(s.image.name))
            entries_.append((path, label, s.image.offset, s.image.size))
        taken = set(paths)
        for s in bad:  # the manifest and the quality check tell records apart by path
            path = rel if s.name is None else _unique(f"{rel}/{_printable(s.name)}", taken)
            skipped.append(_skip(path, s.kind, s.reason))
    return entries_, skipped


def parquet_files(root, split: str) -> list:
    """The Parquet shards of a split: SOURCE/<split>/*.parquet, the Hub's SOURCE/data/<split>-*.parquet, or the
    one shard SPLIT names (given as SOURCE), sorted."""
    root = location(root)
    if split.endswith(".parquet") and (root / split).is_file():
        return [root / split]
    base = root / split
    if base.is_dir():
        return [base / f for f in sorted(entries(base)[1]) if f.endswith(".parquet")]
    data = root / "data"
    return [data / f for f in sorted(entries(data)[1]) if f.startswith(f"{split}-") and f.endswith(".parquet")]


def _parquets(root, split: str) -> tuple[list, list, list[str] | None]:
    """Entries, skip records and class names (the first shard's that has them) of the Parquet shards."""
    from pipeline.parquet import index_shard

    shards = parquet_files(root, split)
    with ThreadPoolExecutor(location(root).parallel(16)) as pool:
        listed = list(pool.map(index_shard, shards))
    entries_, skipped, names = [], [], None
    for shard, (rows, skips, found) in zip(shards, listed, strict=True):
        rel = shard.relative_to(root).as_posix()
        names = names or found
        entries_ += [(f"{rel}/{r.index}", r.label, r.group, r.at) for r in rows]
        skipped += [_skip(f"{rel}/{s.name}" if s.name else rel, s.kind, s.reason) for s in skips]
    return entries_, skipped, names


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


def _flat(root, cfg) -> tuple[list, list]:
    from pipeline.imagenet import val_labels

    base = root / cfg.split
    labels = val_labels([root], cfg.labels)
    entries_ = []
    for name in files_below(base):
        wnid = labels.get(name, labels.get(PurePosixPath(name).stem)) if labels else None
        entries_.append((f"{cfg.split}/{name}", wnid, -1, -1))
    return entries_, []


def read_labels(path) -> dict[str, str]:
    """{file name or stem: wnid} from LOC_val_solution.csv (ImageNet's) or lines of `filename wnid`; {} if the
    default file is absent. A file given but unreadable raises."""
    if not path.is_file():
        if path.name == "LOC_val_solution.csv":
            return {}
        raise FileNotFoundError(f"no labels file {path}")
    lines = [line.strip() for line in read_lines(path) if line.strip()]
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


def _listed(root, list_file: str) -> tuple[list, list]:
    """Entries of a list file: `path [wnid]` per line (blank lines and # comments passed over). A file listed
    twice is read once; its later lines are recorded as `duplicate_line` skips, each record under its own path.
    In an object store the listed objects are looked up at once."""
    lines = []
    top = root.resolve()
    for n, line in enumerate(read_lines(location(list_file)), 1):
        words = line.split()
        if words and not words[0].startswith("#"):
            path = (root / words[0]).resolve()
            lines.append((n, words, path, path.is_relative_to(top)))
    with ThreadPoolExecutor(location(root).parallel(32)) as pool:
        there = list(pool.map(lambda x: x[3] and len(x[1]) <= 2 and x[2].is_file(), lines))
    entries_, skips, stored = [], [], set()
    for (n, words, path, inside), is_file in zip(lines, there, strict=True):
        rel = path.relative_to(top).as_posix() if inside else words[0]
        where = f"line {n} of {list_file}"
        if len(words) > 2:
            skips.append((rel, "bad_line", f"{where}: more than a path and a wnid"))
        elif not inside:
            skips.append((rel, "bad_line", f"{where}: outside {root}"))
        elif not is_file:
            skips.append((rel, "missing", f"{where}: no such file"))
        elif rel in stored:
            skips.append((rel, "duplicate_line", f"{where}: listed before"))
        else:
            stored.add(rel)
            entries_.append((rel, words[1] if len(words) > 1 else None, -1, -1))
    taken = set(stored)  # a record's path names one record: skips sharing one get `#2`, `#3`, ...
    return entries_, [_skip(_unique(rel, taken), kind, reason) for rel, kind, reason in skips]


def _labelled(root, split: str, entries: list, given: list[str] | None = None) -> tuple[list[Source], list[str]]:
    """Sources from (path, wnid | class index | None, offset, size) and the class list that labels them:
    synsets.txt when present, else the class names the source carries (`given`), else the indices found (named
    "0" to "K-1"), then the other wnids found."""
    from pipeline.imagenet import class_file, label_roots

    synsets = class_file(*label_roots(root, split))
    if synsets is not None:
        classes = read_synsets(synsets)  # pipeline.tars keeps class indices inside it
    elif given is not None and all(w < len(given) for _, w, _, _ in entries if isinstance(w, int)):
        classes = list(given) + sorted({w for _, w, _, _ in entries if isinstance(w, str)} - set(given))
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
            raise Refused("--classes needs labels with wnids (synsets.txt for class indices, or a labels file)")
        missing = sorted(set(classes) - {s.wnid for s in sources})
        if missing:
            raise Refused(f"classes not found in the source: {', '.join(missing[:5])}")
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
