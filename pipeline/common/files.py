"""Atomic file writes: a reader, or a run resumed after a crash, sees the whole new file or the old one."""

import os
from pathlib import Path


def atomic_write(path: Path, data, sync: bool = True, tmp_dir: Path | None = None) -> None:
    """Write to a temp name, then rename over `path`; the temp file is removed if the write fails.

    data: bytes-like, a list of them (written in turn, never joined in memory), or a function given the open
    file. sync: fsync before the rename (what is costly to redo). tmp_dir: where the temp file goes (the same
    file system), so that a write cut short by a kill leaves nothing beside `path`.
    """
    path = Path(path)
    tmp = Path(tmp_dir or path.parent) / f".{path.name}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                for piece in data if isinstance(data, list) else (data,):
                    f.write(piece)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
