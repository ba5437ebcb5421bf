"""Where a run writes: a local folder, or a prefix in an object store (`--out s3://bucket/runs/x`).

An object store has no rename, so each object is written whole with one PUT and appears only once its upload
completes: a reader finds the previous checkpoint or the new one, never part of one. The run works in a local
folder (metrics.csv, TensorBoard's event files, the plots and reports) and copies what changed up at each
checkpoint and at the end; checkpoints go straight up from memory. A resumed run takes its checkpoint and
metrics.csv from the bucket, so any node can continue it.
"""

import hashlib
import shutil
import tempfile
from pathlib import Path

from pipeline.common.files import atomic_write, check_writable
from pipeline.common.storage import ObjectPath, location


class RunFolder:
    """A run's --out. `local` is where files are written first (the folder itself when --out is local)."""

    def __init__(self, out: str, scratch: bool = False):
        """scratch: for --out in a bucket, write first into a new temporary folder instead of the run's own (a
        command that adds reports beside a run must not copy up a stale working copy of that run)."""
        self.out = str(out)
        where = location(self.out)
        self.url: ObjectPath | None = where if isinstance(where, ObjectPath) else None
        self.local = Path(where) if self.url is None else Path()
        if self.url:
            self.local = Path(tempfile.mkdtemp(prefix="colorize-out-")) if scratch else work_folder(self.out)
        self._sent: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) last uploaded

    def __str__(self) -> str:
        return self.out

    def ref(self, name: str) -> str:
        """The name as a user finds it: a URL in the bucket, or a local path."""
        return str(self.url / name) if self.url else str(self.local / name)

    def check(self) -> None:
        """Refuse, in one line, an --out that cannot be written."""
        check_writable(self.url if self.url else self.local, "--out")

    def prepare(self, resume: bool) -> None:
        """Make the local folder; for a bucket, start it empty and, to continue a run, fetch its metrics.csv."""
        if self.url:
            shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        if self.url and resume and (self.url / "metrics.csv").is_file():
            (self.local / "metrics.csv").write_bytes((self.url / "metrics.csv").read_bytes())

    def has(self, name: str) -> bool:
        return (self.url / name).is_file() if self.url else (self.local / name).is_file()

    def save(self, name: str, write) -> None:
        """Write `name` whole (write(f) fills the file): renamed into place, or one PUT."""
        atomic_write(self.url / name if self.url else self.local / name, write)

    def delete(self, name: str) -> None:
        (self.url / name if self.url else self.local / name).unlink(missing_ok=True)

    def numbered(self, pattern: str) -> list[str]:
        """Names of the run's files matching a glob pattern (e.g. the step checkpoints), sorted."""
        folder = self.url if self.url else self.local
        return sorted(p.name for p in folder.glob(pattern))

    def publish(self) -> None:
        """Copy up every local file that changed since it was last copied (nothing to do for a local --out)."""
        if not self.url:
            return
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            name = path.relative_to(self.local).as_posix()
            stat = path.stat()
            if self._sent.get(name) != (stat.st_size, stat.st_mtime_ns):
                (self.url / name).write_bytes(path.read_bytes())
                self._sent[name] = (stat.st_size, stat.st_mtime_ns)


def work_folder(out: str) -> Path:
    """The local folder where a run with --out in a bucket writes first (one per --out and machine)."""
    return Path(tempfile.gettempdir()) / "colorize-runs" / hashlib.sha256(out.encode()).hexdigest()[:16]
