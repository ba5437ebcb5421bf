"""ImageNet as it is distributed: its class lists, the labels of its validation images, and an archive given as
SOURCE.

- The class list: `SOURCE/synsets.txt` or Kaggle's `SOURCE/LOC_synset_mapping.txt` (`wnid words` per line, the
  standard order), when present.
- Validation labels, by image (its file name without extension): `--labels FILE`, else
  `SOURCE/LOC_val_solution.csv` (`ImageId,PredictionString`, the wnid first), else the ILSVRC 2012 devkit:
  `ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt` (line i: the ILSVRC2012_ID of
  `ILSVRC2012_val_000000i`) with `meta.mat`, whose `synsets` map those IDs to wnids (the IDs are not the sorted
  wnids' order), from the extracted folder or from `ILSVRC2012_devkit_t12.tar.gz` read in place.
- An archive given as SOURCE (`.../ILSVRC2012_img_train.tar`, a `.tar.gz` or `.parquet` shard) is read as the one
  source file of its folder: SOURCE becomes the folder, the split the archive's name.
"""

import gzip
import io
import tarfile
from dataclasses import replace
from pathlib import PurePosixPath

from pipeline.common.cli import Refused
from pipeline.storage import location
from pipeline.storage.files import read_bounded

CLASS_FILES = ("synsets.txt", "LOC_synset_mapping.txt")
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".parquet")
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt"
META = f"{DEVKIT}/data/meta.mat"
MAX_DEVKIT = 64 << 20  # bytes of the devkit archive or either of its files: the real ones are 2.5 MB and 0.2 MB


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def archive_source(cfg):
    """`cfg` with an archive given as SOURCE read as the one source of its folder (SOURCE its folder, the split
    its name); any other `cfg` as it is."""
    where = location(cfg.source)
    if is_archive(where.name) and where.is_file():
        return replace(cfg, source=where.parent, split=where.name)
    return cfg


def label_roots(root, split: str) -> list:
    """Where the class list and the validation labels are looked for: SOURCE, and for an archive given as SOURCE
    also the folder above its own (ImageNet's SOURCE/train/ILSVRC2012_img_train.tar beside SOURCE/synsets.txt)."""
    root = location(root)
    return [root, root.parent] if is_archive(split) and (root / split).is_file() else [root]


def class_file(*roots):
    """The class list's file in the first of `roots` that has one (synsets.txt, else LOC_synset_mapping.txt), or
    None."""
    for root in map(location, roots):
        for name in CLASS_FILES:
            if (root / name).is_file():
                return root / name
    return None


def is_class(name: str, classes: set[str] | None) -> bool:
    """Whether a folder's or tar's name names a class: one of the class list, or without one an ImageNet wnid."""
    from pipeline.labels import WORDNET_ID

    return name in classes if classes is not None else bool(WORDNET_ID.fullmatch(name))


def val_labels(roots: list, labels_file: str | None) -> dict[str, str]:
    """{image name without extension, and with: wnid} of the validation images, from `--labels`, else from the
    first of `roots` with LOC_val_solution.csv or the devkit; {} when none has."""
    from pipeline.layouts import read_labels

    if labels_file:
        return read_labels(location(labels_file))
    for root in map(location, roots):
        if (root / "LOC_val_solution.csv").is_file():
            return read_labels(root / "LOC_val_solution.csv")
        found = read_devkit(root)
        if found:
            return found
    return {}


def read_devkit(root) -> dict[str, str]:
    """{ILSVRC2012_val_NNNNNNNN: wnid} from the devkit, extracted at SOURCE's root or its .tar.gz there; {} if
    neither is there. Refused naming the file when it is there but does not read."""
    root = location(root)
    if (root / GROUND_TRUTH).is_file() and (root / META).is_file():
        truth, meta, where = read_bounded(root / GROUND_TRUTH, MAX_DEVKIT), read_bounded(root / META, MAX_DEVKIT), root
    elif (root / f"{DEVKIT}.tar.gz").is_file():
        where = root / f"{DEVKIT}.tar.gz"
        truth, meta = _from_devkit_archive(read_bounded(where, MAX_DEVKIT), where)
    else:
        return {}
    wnids = _meta_wnids(meta, where)
    out = {}
    try:
        for i, line in enumerate(truth.decode().split(), 1):
            out[f"ILSVRC2012_val_{i:08d}"] = wnids[int(line)]
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise Refused(f"{where}: the validation ground truth does not read ({type(e).__name__}: {e})") from None
    return out


def _from_devkit_archive(data: bytes, where) -> tuple[bytes, bytes]:
    """(ground truth, meta.mat) from the devkit's .tar.gz, streamed (gzip has no random access)."""
    found = {}
    try:
        with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(data)), mode="r|") as tf:
            for m in tf:
                if m.isreg() and m.name in (GROUND_TRUTH, META) and m.size <= MAX_DEVKIT:
                    found[m.name] = tf.extractfile(m).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise Refused(f"{where}: not a readable devkit archive ({type(e).__name__}: {e})") from None
    if len(found) < 2:
        raise Refused(f"{where}: has no {GROUND_TRUTH} and {META}")
    return found[GROUND_TRUTH], found[META]


def _meta_wnids(data: bytes, where) -> dict[int, str]:
    """{ILSVRC2012_ID: wnid} of the devkit's meta.mat (its `synsets` struct array)."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception as e:  # noqa: BLE001 - a .mat file can fail to load in many ways; each is this refusal
        raise Refused(f"{where}: meta.mat does not read as the devkit's ({type(e).__name__}: {e})") from None


def stem(path: str) -> str:
    """A member's or file's name without folders and extension (how validation labels name an image; an archive
    loses its whole `.tar.gz`)."""
    name = PurePosixPath(path).name
    for suffix in ARCHIVES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return PurePosixPath(name).stem
