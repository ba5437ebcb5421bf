"""Writes that a reader, or a run resumed after a crash, sees whole or not at all, and bounded reads, in a local
folder or an object store alike: each a method of the location (local.py, objects.py), here as functions of a path
or URL for callers that hold text."""

from pipeline.storage import location
from pipeline.storage.local import open_regular

__all__ = ["atomic_write", "check_writable", "files_below", "has_files", "open_regular", "read_bounded", "read_file",
           "remove_tree"]  # fmt: skip


def atomic_write(path, data, sync: bool = True, tmp_dir=None) -> None:
    """Write `data` to `path` so that it is whole or absent: locally to a temp name in `tmp_dir` (the same file
    system; default beside) renamed over `path`, in an object store one PUT. data: bytes-like, a list of them
    (written in turn, never joined in memory on a disk), or a function given the open file. sync: fsync before the
    rename (what is costly to redo)."""
    location(path).write_atomic(data, sync, tmp_dir)


def read_bounded(path, limit: int) -> bytes:
    """The bytes of a file or an object; TooLarge (a refusal), before reading it, if it has more than `limit`:
    a file planted where others write (a shared store, a bucket) costs no more memory than that."""
    return location(path).read_bytes(limit)


def read_file(path) -> bytes:
    """The bytes of a regular file (or an object). Anything else (a FIFO, a device, a folder) is an OSError at
    once: opened without blocking and checked before a byte is read, since reading a FIFO waits for a writer."""
    return location(path).read_regular()


def remove_tree(path) -> None:
    """Delete a folder (or a prefix of an object store) and everything below it; nothing there is no error."""
    location(path).delete_tree()


def files_below(folder) -> list[str]:
    """The paths below `folder` of every regular, non-hidden file there, as POSIX text, sorted. Text, not Path
    objects: a source list of a million files is built in a second."""
    return location(folder).files_below()


def has_files(folder) -> bool:
    """Whether any non-hidden file lies below `folder`."""
    return location(folder).has_files()


def check_writable(path, what: str) -> None:
    """Refuse, in one line and leaving nothing, a store that cannot be written."""
    location(path).check_writable(what)
