"""Several ranks (torchrun): the process group, with a timeout, and what ends a run when a rank is lost.

A collective waits for every rank. A rank that dies or freezes (SIGSTOP, a hung node) would leave the others
waiting for the backend's default 30 minutes, then print a traceback each. Here the group has a timeout
(`--ddp-timeout`, default 300 s) and each rank bumps a counter in the rendezvous store every `BEAT` seconds from a
thread (`Watch`). When a collective fails, the counters that stopped moving name the lost ranks, and the run ends
with one line (`RankLost`) naming them and the remedy: `--resume`, from the last checkpoint.
"""

import datetime
import os
import threading
import time

import torch
import torch.distributed as dist

BEAT = 1.0  # seconds between two heartbeats of a rank
SIGNS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "broken pipe", "socket")


class RankLost(RuntimeError):
    """A rank of the run stopped answering: the others stop too, and the run continues with --resume."""


def init(timeout_s: float, rank: int, world: int) -> None:
    """The default process group (NCCL on GPUs, gloo on CPUs), whose collectives give up after timeout_s."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world)


def _store(timeout_s: float) -> dist.TCPStore:
    """A client of the rendezvous store (torchrun's agent, or rank 0 when the ranks are started by hand)."""
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
    return dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))


def _key(rank: int) -> str:
    return f"colorize/alive/{rank}"


class Watch:
    """Each rank's heartbeat, while the run trains; `explain` turns a collective's failure into RankLost."""

    def __init__(self, rank: int, world: int, timeout_s: float):
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Watch":
        if self.world > 1:
            self._thread = threading.Thread(target=self._beat, name="ddp-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _beat(self) -> None:
        try:
            store = _store(max(10.0, 5 * BEAT))
            while not self._stop.is_set():
                store.add(_key(self.rank), 1)
                self._stop.wait(BEAT)
        except (RuntimeError, OSError):
            return  # the store is gone: `explain` says so

    def lost(self) -> list[int] | None:
        """The ranks whose heartbeat stopped (watched for 3 beats), or None if the store itself does not answer."""
        try:
            store = _store(10.0)
            before = [store.add(_key(r), 0) for r in range(self.world)]
            time.sleep(3 * BEAT)
            after = [store.add(_key(r), 0) for r in range(self.world)]
        except (RuntimeError, OSError):
            return None
        return [r for r in range(self.world) if r != self.rank and after[r] == before[r]]

    def explain(self, error: BaseException, advice: str) -> None:
        """RankLost naming the lost ranks, if `error` is a collective's failure and a rank is lost; else nothing
        (the caller re-raises the error as it was)."""
        text = str(error).lower()
        if self.world <= 1 or not (isinstance(error, dist.DistError) or any(s in text for s in SIGNS)):
            return
        lost = self.lost()
        if lost is None:
            host = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"
            raise RankLost(f"rank {self.rank} of {self.world}: the rendezvous store at {host} does not answer (rank "
                           f"0, which hosts it, or the launcher is lost) {advice}") from None  # fmt: skip
        if lost:
            names = ", ".join(map(str, lost))
            why = f"no heartbeat for {3 * BEAT:.0f} s; collectives wait {self.timeout_s:g} s, --ddp-timeout"
            raise RankLost(
                f"rank {self.rank} of {self.world}: rank {names} stopped answering ({why}) {advice}"
            ) from None
