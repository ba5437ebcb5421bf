"""`LocalPath`: a local file or folder with the same methods as `ObjectPath`, so that a caller holding a location
never asks which kind it holds. Each method is the local half of a pair; the object store half is in objects.py.
"""

import contextlib
import errno
import os
import shutil
import stat
import threading
from pathlib import PosixPath

from pipeline.storage.client import TooLarge


class NotRegular(OSError):
    """A path that is there but is not a regular file (a FIFO, a device, a folder, or a link not to be followed)."""


class LocalPath(PosixPath):
    """A path on this machine's file system, with the methods of `ObjectPath` besides pathlib's own."""

    scheme = "file"
    options: tuple = ()

    @property
    def local(self) -> "LocalPath":
        """The path for readers that hand the OS a file (pread, pyarrow): this one; an object store has none."""
        return self

    def parallel(self, requests: int) -> int:
        """Threads worth spending on `requests` independent reads: one, since a disk's waits do not overlap."""
        return 1

    # -- reading -------------------------------------------------------------------------------------------------
    def read_bytes(self, limit: int | None = None) -> bytes:
        """The file's bytes; with a limit, TooLarge (before reading) past `limit` bytes, and regular files only."""
        if limit is None:
            return super().read_bytes()
        with open_regular(self) as f:
            size = os.fstat(f.fileno()).st_size  # f.read(limit) would allocate the limit first
            if size > limit:
                raise TooLarge(self, size, limit)
            data = f.read(size + 1)
        if len(data) > limit:
            raise TooLarge(self, len(data), limit)
        return data

    def read_regular(self) -> bytes:
        """The bytes of a regular file; NotRegular at once for a FIFO, a device or a folder."""
        with open_regular(self) as f:
            return f.read()

    def read_range(self, start: int, length: int) -> bytes:
        with open(self, "rb") as f:
            f.seek(start)
            return f.read(length)

    def open_sized(self, block: int = 1 << 16):
        """(an open binary file, its size); NotRegular for anything but a regular file (a FIFO would block)."""
        f = open_regular(self)
        return f, os.fstat(f.fileno()).st_size

    def open_stream(self, buffer: int):
        """The file, read forward."""
        return open(self, "rb")  # noqa: SIM115 - the caller closes it

    def file_or_path(self) -> str:
        """What a library that takes a path or a file (pyarrow) reads fastest: the path."""
        return str(self)

    def stamp(self) -> float:
        """Changes when the file does: its modification time."""
        return os.path.getmtime(self)

    # -- listing -------------------------------------------------------------------------------------------------
    def entries(self) -> tuple[list[str], list[str]]:
        """(folder names, other names) directly below; both empty for a path that is not a folder."""
        if not self.is_dir():
            return [], []
        folders, others = [], []
        for p in self.iterdir():
            (folders if p.is_dir() else others).append(p.name)
        return folders, others

    def subfolders(self) -> list[str]:
        """The folder names directly below (FileNotFoundError if this is not a folder)."""
        return [p.name for p in self.iterdir() if p.is_dir()]

    def files_below(self) -> list[str]:
        """Every regular, non-hidden file below, as POSIX text relative to this folder, sorted; hidden folders are
        passed over and links to folders not followed (no loops)."""
        files, top = [], str(self)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=None):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            below = dirpath[len(top) + 1 :]
            files += [f"{below}/{name}" if below else name for name in filenames if not name.startswith(".")]
        return sorted(files)

    def has_files(self) -> bool:
        return any(f[0] != "." for _, _, fs in os.walk(self) for f in fs)

    def tree(self) -> tuple[list[str], list[str]]:
        """(files, folders) below, as keys relative to this folder, sorted; links count as files (never followed)."""
        files, folders, top = [], [], str(self)
        if not self.is_dir():
            return [], []
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            here = dirpath[len(top) + 1 :] + "/" if dirpath != top else ""
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if d not in links]
            files += [here + f for f in filenames + links]
            folders += [here + d for d in dirnames]
        return sorted(files), sorted(folders)

    def listed(self) -> dict[str, tuple[int, str]]:
        """{file below, relative: (its size, its identity: size and time)}."""
        out, top = {}, str(self)
        for dirpath, _, filenames in os.walk(top, followlinks=False):
            for name in filenames:
                full = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.stat(full)
                    out[full[len(top) + 1 :]] = (st.st_size, f"{st.st_size}-{st.st_mtime:.6f}")
        return out

    # -- writing -------------------------------------------------------------------------------------------------
    def write_atomic(self, data, sync: bool = True, tmp_dir=None) -> None:
        """Write to a temp name in `tmp_dir` (default: beside), then rename over this path; the temp file is
        removed if the write fails. data: bytes-like, a list of them (written in turn), or a function of the file."""
        tmp = PosixPath(tmp_dir or self.parent) / f".{self.name}.tmp{os.getpid()}-{threading.get_ident()}"
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
            os.replace(tmp, self)
        finally:
            tmp.unlink(missing_ok=True)

    def delete_tree(self) -> None:
        shutil.rmtree(self, ignore_errors=True)

    def delete_keys(self, paths: list) -> None:
        for p in paths:
            p.unlink(missing_ok=True)

    def remove_empty(self) -> None:
        """Remove this folder if it is empty."""
        with contextlib.suppress(OSError):
            self.rmdir()

    @contextlib.contextmanager
    def tidy(self, *inner):
        """On leaving: remove the `inner` folders if empty, then this one if the block made it and it is empty."""
        made = not self.exists()
        try:
            yield self
        finally:
            for folder in inner:
                folder.remove_empty()
            if made:
                self.remove_empty()

    def check_writable(self, what: str) -> None:
        from pipeline.common.cli import make_dir

        make_dir(self, what, keep=False)

    def zarr_store(self, read_only: bool = False) -> str:
        """What zarr.open_group takes for this folder."""
        return str(self)


def open_regular(path, follow: bool = True):
    """A regular file opened for reading, or OSError at once for anything else (a FIFO, a device, a folder; with
    follow=False, a link): opened without blocking and checked before a byte is read, since reading a FIFO waits
    for a writer."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegular(errno.EINVAL, "not a regular file (a link)", str(path)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
        raise NotRegular(errno.EINVAL, f"not a regular file ({kind})", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
