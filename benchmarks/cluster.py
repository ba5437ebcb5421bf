"""A Dask cluster of processes apart from the benchmark's own, as on a multi-node cluster: the CPU time of the
process that runs the flow is then its own, not the scheduler's."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path


@contextlib.contextmanager
def dask_cluster(workers: int, folder: Path):
    """A scheduler on 127.0.0.1 and `workers` single-threaded worker processes, each a process tree of its own
    (with the flow's malloc settings): yields (the scheduler's address, the launcher processes)."""
    from flows.cluster import WORKER_MALLOC_ENV

    dask = Path(sys.executable).parent / "dask"
    file = folder / "scheduler.json"
    file.unlink(missing_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", file], **quiet)  # fmt: skip
    procs = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        env = os.environ | WORKER_MALLOC_ENV
        worker = [dask, "worker", "--scheduler-file", file, "--nworkers", str(workers), "--nthreads", "1"]
        procs.append(subprocess.Popen([*worker, "--no-dashboard", "--host", "127.0.0.1"], env=env, **quiet))
        from distributed import Client

        with Client(scheduler_file=str(file), timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            address = client.scheduler.address
        yield address, procs
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
