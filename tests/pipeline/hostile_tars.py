"""Helpers of the hostile WebDataset shard tests (test_tars_hostile.py, test_tars_damaged.py): shards written
member by member, and what `samples` and `find` account for. One copy, so that both modules judge alike."""

import io
import tarfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

from pipeline.config import PreprocessConfig
from pipeline.layouts import find

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = {"reg": tarfile.REGTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}
TYPES |= {"fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}


def write_tar(path: Path, members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> None:
    """members: (name, data) regular files, or (name, type, data or link target)."""
    with tarfile.open(path, "w", format=fmt) as tf:
        for m in members:
            name, kind, data = m if len(m) == 3 else (m[0], "reg", m[1])
            info = tarfile.TarInfo(name)
            info.type = TYPES[kind]
            if kind == "reg":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind in ("sym", "lnk"):
                info.linkname = data.decode("utf-8", "replace")
            info.devmajor, info.devminor = (1, 3) if kind == "chr" else (0, 0)
            tf.addfile(info)


def shard_in(tmp: str, members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> Path:
    (Path(tmp) / "train").mkdir(exist_ok=True)
    path = Path(tmp) / "train" / "s.tar"
    write_tar(path, members, fmt)
    return path


def accounted(out, skips) -> Counter:
    """The member names that samples and skips account for, each as often as it is accounted for."""
    names = Counter()
    for s in out:
        names.update([s.image.name] + ([s.label_member] if s.label_member else []))
    for k in skips:
        names.update(([k.name] if k.name is not None else []) + list(k.covers))
    return names


def find_records(tmp: str) -> list[str]:
    """Every path `find` records (sources and skips): each must be unique for the store's accounting."""
    found = find(PreprocessConfig(source=tmp, layout="tar"))
    assert all(r["reason"] for r in found.skipped)
    return [s.path for s in found.sources] + [r["path"] for r in found.skipped]
