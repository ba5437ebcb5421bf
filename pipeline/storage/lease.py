"""One writer at a time: a lease object in the folder or prefix being written (a store's `_staging/lease.json`, a
run folder's `lease.json`), in a local folder and in a bucket alike.

A lease is a small JSON object naming its holder: a random id, the host, the pid, what it does, when it began,
and a heartbeat (the wall-clock time of its last renewal). Taking one:
- a live lease of another writer is refused (`LeaseHeld`, one line naming the holder);
- a lease whose holder is gone (on this host, its pid has exited) or silent (no heartbeat for `STALE` seconds) is
  taken over, with a warning;
- the put is conditional: create-if-absent, or if-match the ETag of the stale lease read (locally `O_EXCL`, or a
  rename over the stale file). Some S3 servers accept conditional puts without checking them (rclone's `serve s3`),
  so in a bucket the lease is read back after `SETTLE` seconds: a writer that finds another's id there lost the
  race and refuses.
A thread renews the heartbeat every `BEAT` seconds and checks the lease is still its holder's: one taken over (its
holder was frozen past `STALE`) makes `check` raise `LeaseLost`, so the old holder stops at its next step.
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipeline.common.cli import Refused
from pipeline.storage import ObjectPath, TooLarge, location
from pipeline.storage.files import open_regular

log = logging.getLogger("colorize.lease")
BEAT = 15.0  # seconds between heartbeats
STALE = 120.0  # seconds without a heartbeat after which a lease is anybody's: 8 missed beats
SETTLE = 1.0  # seconds before a lease taken in a bucket is read back (servers that ignore conditions)
MAX_LEASE = 1 << 16  # bytes of a lease: its record is under 300
SKEW = 2 * BEAT  # seconds a heartbeat may lie in the future (clocks of two hosts differ): beyond, it is forged


class LeaseHeld(Refused):
    """Another writer holds the lease."""


class LeaseLost(RuntimeError):
    """This writer's lease was taken over (it was silent for longer than STALE): it must stop writing."""


def _now() -> float:
    return time.time()


def describe(record: dict) -> str:
    """'pid P on host H (what), since T, heartbeat N s ago' of a lease's record (its fields shown as data)."""
    try:
        since = datetime.fromtimestamp(float(record.get("since", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ago = f"{max(0.0, _now() - float(record.get('beat', 0))):.0f}"
    except (TypeError, ValueError, OverflowError, OSError):
        since, ago = "?", "?"
    what = f" ({str(record['what'])[:80]!r})" if record.get("what") else ""
    who = f"pid {str(record.get('pid'))[:20]} on host {str(record.get('host'))[:80]!r}"
    return f"{who}{what}, since {since}, heartbeat {ago} s ago"


def is_stale(record: dict) -> bool:
    """Whether a lease's holder is gone: its pid exited (on this host), or it has been silent past STALE."""
    try:
        beat, pid = float(record["beat"]), int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return True  # not a lease this project wrote: nobody holds it
    if not 0 < pid < 1 << 22:  # beyond any pid Linux gives (pid_max <= 2^22): forged, so nobody holds it
        return True
    if record.get("host") == socket.gethostname() and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
    return not (-SKEW < _now() - beat < STALE)  # silent, or a heartbeat from the future (`not`: nan is stale)


def _parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def read(path) -> tuple[dict, str] | None:
    """(the lease's record, its version tag) or None if there is none; a file that is not a lease reads as {}."""
    path = location(path)
    try:
        if isinstance(path, ObjectPath):
            data, tag = path.read_meta(MAX_LEASE)
        else:
            _no_link(path)
            with open_regular(path, follow=False) as f:
                data, tag = f.read(MAX_LEASE + 1), str(os.fstat(f.fileno()).st_mtime_ns)
    except FileNotFoundError:
        return None
    except TooLarge as e:  # not a lease this project wrote: nobody holds it
        return {}, e.etag
    except OSError as e:  # a FIFO, a folder, a link planted where the lease goes
        raise LeaseHeld(f"{path}: {e.strerror or e}, where a lease belongs; remove it") from None
    return _parse(data) if len(data) <= MAX_LEASE else {}, tag


def _no_link(path: Path) -> None:
    """LeaseHeld if the folder a local lease goes in is a link: it would be written, and deleted, elsewhere."""
    if path.parent.is_symlink():
        raise LeaseHeld(f"{path.parent} is a link, where the lease's folder belongs; remove it")


def holder(path) -> dict | None:
    """The record of a live lease at `path`, or None (none, or a stale one)."""
    found = read(path)
    return found[0] if found is not None and not is_stale(found[0]) else None


class Lease:
    """The lease at `path` (a file or an object), taken by `acquire` and renewed until `release`."""

    def __init__(self, path, what: str, thing: str):
        """what: what the holder does (shown to the refused); thing: what is leased, for messages."""
        self.path, self.thing = location(path), thing
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "what": what,
                       "since": _now(), "beat": _now()}  # fmt: skip
        self._tag: str | None = None
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _data(self) -> bytes:
        return json.dumps(self.record).encode()

    def acquire(self) -> "Lease":
        """Take the lease, or LeaseHeld naming the live holder."""
        found = read(self.path)
        if found is not None:
            record, tag = found
            if not is_stale(record):
                raise LeaseHeld(f"{self.thing} is being written by {describe(record)}: one writer at a time; "
                                f"wait for it, or, if it is gone, its lease ({self.path}) lapses {STALE:.0f} s "
                                "after its last heartbeat")  # fmt: skip
            log.warning("%s: taking over the lease of %s, which is gone", self.thing, describe(record) if record
                        else "an unreadable lease")  # fmt: skip
        else:
            tag = None
        self.record["since"] = self.record["beat"] = _now()
        if not self._put(tag if found is not None else None, takeover=found is not None):
            raise LeaseHeld(f"{self.thing} was just taken by {self._other()}: one writer at a time")
        if isinstance(self.path, ObjectPath) or found is not None:  # a bucket, or a takeover: is it ours still?
            time.sleep(SETTLE if isinstance(self.path, ObjectPath) else SETTLE / 5)
            now = read(self.path)
            if now is None or now[0].get("owner") != self.record["owner"]:
                raise LeaseHeld(f"{self.thing} was just taken by {self._other()}: one writer at a time")
            self._tag = now[1]
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _other(self) -> str:
        found = read(self.path)
        return describe(found[0]) if found and found[0] else "another writer"

    def _put(self, tag: str | None, takeover: bool) -> bool:
        """Write this lease: only if none is there (takeover False) or the one read is still there."""
        if isinstance(self.path, ObjectPath):
            if takeover and not tag:  # an unreadable lease without an ETag: put, and read back after SETTLE
                self.path.write_bytes(self._data())
                return True
            got = self.path.write_new(self._data(), tag)
            self._tag = got
            return got is not None
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _no_link(path)
        if not takeover:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._data())
            return True
        return self._replace(path)

    def _replace(self, path: Path) -> bool:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(self._data())
        os.replace(tmp, path)
        found = read(path)
        return found is not None and found[0].get("owner") == self.record["owner"]

    def _beat(self) -> None:
        while not self._stop.wait(BEAT):
            try:
                self.renew()
            except LeaseLost as e:
                self._lost = str(e)
                return
            except OSError as e:  # a bucket that does not answer for a while: the next beat tries again
                log.warning("%s: lease heartbeat failed (%s)", self.thing, e)

    def renew(self) -> None:
        """Renew the heartbeat; LeaseLost if the lease is no longer this holder's."""
        found = read(self.path)
        if found is None or found[0].get("owner") != self.record["owner"]:
            taker = describe(found[0]) if found and found[0] else "nobody (it was deleted)"
            raise LeaseLost(f"{self.thing}: the lease was taken over by {taker} while this run was silent; "
                            "stopping")  # fmt: skip
        self.record["beat"] = _now()
        if isinstance(self.path, ObjectPath):
            got = self.path.write_new(self._data(), found[1])
            if got is None:
                raise LeaseLost(f"{self.thing}: the lease changed under this run; stopping")
        else:
            self._replace(Path(self.path))

    def check(self) -> None:
        """LeaseLost if the heartbeat found the lease taken over: the writer must stop."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this holder's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError, LeaseHeld):
            found = read(self.path)
            if found is not None and found[0].get("owner") == self.record["owner"]:
                self.path.unlink(missing_ok=True)
