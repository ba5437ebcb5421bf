"""Writes that a reader, or a run resumed after a crash, sees whole or not at all, in a local folder or an object
store (`pipeline.common.storage`)."""

import errno
import io
import os
import shutil
import stat
import threading
from pathlib import Path

from pipeline.common.storage import ObjectPath, TooLarge


def atomic_write(path, data, sync: bool = True, tmp_dir: Path | None = None) -> None:
    """Write `data` to `path` so that it is whole or absent.

    Locally: to a temp name, then renamed over `path` (the temp file is removed if the write fails). In an object
    store: one PUT, which makes the object appear whole when it completes. data: bytes-like, a list of them
    (written in turn, never joined in memory on a disk), or a function given the open file. sync: fsync before
    the rename (what is costly to redo). tmp_dir: where the temp file goes (the same file system), so that a
    write cut short by a kill leaves nothing beside `path`.
    """
    if isinstance(path, ObjectPath):
        if callable(data):
            buffer = io.BytesIO()
            data(buffer)
            data = buffer.getbuffer()
        path.write_bytes(b"".join(data) if isinstance(data, list) else data)
        return
    path = Path(path)
    tmp = Path(tmp_dir or path.parent) / f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}"
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


def read_bounded(path, limit: int) -> bytes:
    """The bytes of a file or an object; TooLarge (a ValueError), before reading it, if it has more than `limit`:
    a file planted where others write (a shared store, a bucket) costs no more memory than that."""
    if isinstance(path, ObjectPath):
        return path.read_bytes(limit)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size  # f.read(limit) would allocate the limit first
        if size > limit:
            raise TooLarge(path, size, limit)
        data = f.read(size + 1)
    if len(data) > limit:
        raise TooLarge(path, len(data), limit)
    return data


def open_regular(path, follow: bool = True):
    """A regular file opened for reading, or OSError at once for anything else (a FIFO, a device, a folder; with
    follow=False, a link): opened without blocking and checked before a byte is read, since reading a FIFO waits
    for a writer."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.EINVAL, "not a regular file (a link)", str(path)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
        raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(path) -> bytes:
    """The bytes of a regular file (or an object). Anything else (a FIFO, a device, a folder) is an OSError at
    once: opened without blocking and checked before a byte is read, since reading a FIFO waits for a writer."""
    if isinstance(path, ObjectPath):
        return path.read_bytes()
    with open_regular(path) as f:
        return f.read()


def remove_tree(path) -> None:
    """Delete a folder (or a prefix of an object store) and everything below it; nothing there is no error."""
    if isinstance(path, ObjectPath):
        path.delete_tree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def files_below(folder) -> list[str]:
    """The paths below `folder` of every regular, non-hidden file there, as POSIX text, sorted; hidden folders are
    passed over, and symbolic links to folders are not followed (no loops). Text, not Path objects: a source list
    of a million files is built in a second."""
    if isinstance(folder, ObjectPath):
        cut = len(folder.key) + 1 if folder.key else 0
        found = (p.key[cut:] for p in folder.walk_files())
        return sorted(k for k in found if not any(part.startswith(".") for part in k.split("/")))
    files, top = [], str(folder)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=None):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        below = dirpath[len(top) + 1 :]
        files += [f"{below}/{name}" if below else name for name in filenames if not name.startswith(".")]
    return sorted(files)


def has_files(folder) -> bool:
    """Whether any non-hidden file lies below `folder` (stops at the first one)."""
    if isinstance(folder, ObjectPath):
        return folder.has_objects()
    return any(f[0] != "." for _, _, fs in os.walk(folder) for f in fs)


def check_writable(path, what: str) -> None:
    """Refuse, in one line and leaving nothing, a store that cannot be written: a local folder that cannot be
    made, or an object store prefix where a probe object cannot be put and deleted."""
    from pipeline.common.cli import Refused, make_dir

    if not isinstance(path, ObjectPath):
        make_dir(path, what, keep=False)
        return
    probe = path / "_staging" / ".write-check"
    try:
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise Refused(f"{what} {path}: cannot write there ({e})") from None
