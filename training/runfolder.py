"""Where a run writes: a local folder, or a prefix in an object store (`--out s3://bucket/runs/x`).

An object store has no rename, so each object is written whole with one PUT and appears only once its upload
completes: a reader finds the previous checkpoint or the new one, never part of one. The run works in a local
folder (metrics.csv, TensorBoard's event files, the plots and reports) and copies what changed up at each
checkpoint and at the end; checkpoints go straight up from memory. A resumed run takes its checkpoint and
metrics.csv from the bucket, so any node can continue it. That local folder is the run's own (a new temporary
folder), never shared with another run of the same --out.

A run folder has one owner at a time: the run holds a lease in it (`lease.json`, `pipeline.storage.lease`) while it
trains, and a folder that holds a run, finished or running, is refused without --resume (`check_free`).
"""

import re
import shutil
import tempfile
from pathlib import Path

from pipeline.common.cli import Refused
from pipeline.storage import lease, location
from pipeline.storage.files import atomic_write, check_writable

LEASE = "lease.json"
STEP_CHECKPOINT = re.compile(r"checkpoint-[0-9]{8}\.pt", re.ASCII)
RUN_FILES = ("checkpoint-last.pt", "config.json", "metrics.csv")  # any of them: the folder holds a run


class RunFolder:
    """A run's --out. `local` is where files are written first (the folder itself when --out is local)."""

    def __init__(self, out):
        """out: a path or URL, or a location that carries the run's storage options."""
        where = location(out)
        self.out = str(where) if not isinstance(out, str) else out
        self._local = where.local  # for a bucket, none: a temp folder, made when first written to
        self.url = None if self._local is not None else where  # what is copied up to
        self._sent: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) last uploaded
        self.lease: lease.Lease | None = None

    @property
    def local(self) -> Path:
        """Where the run's files are written first: --out itself, or for a bucket this run's own temp folder."""
        if self._local is None:
            self._local = Path(tempfile.mkdtemp(prefix="colorize-run-"))
        return self._local

    def _path(self, name: str):
        return self.url / name if self.url else self.local / name

    def __str__(self) -> str:
        return self.out

    def ref(self, name: str) -> str:
        """The name as a user finds it: a URL in the bucket, or a local path."""
        return str(self.url / name) if self.url else str(self.local / name)

    def check(self) -> None:
        """Refuse, in one line, an --out that cannot be written."""
        check_writable(self.url if self.url else self.local, "--out")

    def check_free(self, resume: bool, stores: tuple[str, ...] = ()) -> None:
        """Refuse, in one line, a folder that is a store or lies in one (of `stores`, or with a zarr.json), one another
        run is writing now, or (without resume) one that holds a run."""
        where = self.url or self.local.resolve()  # links followed: a link into a store is that store
        for store in filter(None, stores):
            store = location(store).resolve()
            if store.scheme == where.scheme and (where == store or where.is_relative_to(store)):
                raise Refused(f"--out {self.out} lies in the store {store}: choose another --out")
        if self.has("zarr.json"):
            raise Refused(f"--out {self.out} is a Zarr store (zarr.json): choose another --out")
        held = lease.holder(self._path(LEASE))
        if held is not None:
            raise lease.LeaseHeld(f"--out {self.out} is being written by another run ({lease.describe(held)}); "
                                  "one run per folder: choose another --out")  # fmt: skip
        found = [name for name in RUN_FILES if self.has(name)]
        if found and not resume:
            raise Refused(f"--out {self.out} holds a run ({found[0]}): continue it with --resume, or choose "
                          "another --out")  # fmt: skip

    def claim(self, resume: bool) -> None:
        """Take the folder's lease (refused as `check_free` says), make the local folder and, to continue a run in
        a bucket, fetch its metrics.csv."""
        self.check_free(resume)
        self.lease = lease.Lease(self._path(LEASE), "colorize-train", f"--out {self.out}").acquire()
        self.local.mkdir(parents=True, exist_ok=True)
        if self.url and resume and (self.url / "metrics.csv").is_file():
            (self.local / "metrics.csv").write_bytes((self.url / "metrics.csv").read_bytes())

    def release(self) -> None:
        """Give the lease back; for a bucket, remove this run's local folder (everything in it is copied up)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.url and self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)

    def check_lease(self) -> None:
        """LeaseLost if another run took the folder over while this one was silent."""
        if self.lease is not None:
            self.lease.check()

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def save(self, name: str, write) -> None:
        """Write `name` whole (write(f) fills the file): renamed into place, or one PUT."""
        atomic_write(self._path(name), write)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def step_checkpoints(self) -> list[str]:
        """The names of the step checkpoints (`checkpoint-NNNNNNNN.pt`, exactly as a run names them), sorted: the
        only files `--keep` deletes."""
        folder = self.url if self.url else self.local
        return sorted(p.name for p in folder.glob("checkpoint-*.pt") if STEP_CHECKPOINT.fullmatch(p.name))

    def publish(self) -> None:
        """Copy up every local file that changed since it was last copied (nothing to do for a local --out)."""
        if not self.url:
            return
        for path in sorted(p for p in self.local.rglob("*") if p.is_file() and p.name != LEASE):
            name = path.relative_to(self.local).as_posix()
            stat = path.stat()
            if self._sent.get(name) != (stat.st_size, stat.st_mtime_ns):
                (self.url / name).write_bytes(path.read_bytes())
                self._sent[name] = (stat.st_size, stat.st_mtime_ns)
