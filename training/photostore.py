"""`colorize-train --photos DIR_OR_URL`: the store of a user's photos, built inside the run's folder by the
preprocessing flow (`colorize-preprocess`, run as a command: training does not import the flows) and reused by a
later call on the same --out, such as a --resume."""

import subprocess
import sys

from pipeline.common.cli import Refused, Unusable

STORE = "store.zarr"


def photo_store_path(out: str) -> str:
    return f"{str(out).rstrip('/')}/{STORE}"


def build_photo_store(photos: str, store: str, size: int) -> None:
    """Build `store` from `photos` at `size` unless it is already whole; Refused if the flow does not finish."""
    from pipeline.store.format import open_store

    try:
        open_store(store)
        print(f"--photos: the store {store} is built already: reused", flush=True)
        return
    except (Unusable, OSError, ValueError):
        pass  # absent or unfinished: the flow builds it, or finishes it where it stopped
    parent, _, name = photos.rstrip("/").rpartition("/")  # the photos' folder is the split: flat or class folders
    source = parent or "."
    if source.endswith(":/"):  # a bucket's root, s3://bucket: the source is the bucket
        source += "/"
    cmd = [sys.executable, "-m", "flows.preprocess", f"--split={name}", "--size", str(size), "--no-quality", "--",
           source, store]  # fmt: skip
    done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
    if done.returncode:  # its own one-line reason, in ours
        why = next((line for line in reversed(done.stderr.splitlines()) if line.startswith("error: ")), "")
        why = why.removeprefix("error: ") or f"colorize-preprocess exited with {done.returncode}"
        raise Refused(f"--photos {photos}: the store was not built ({why})")
    sys.stderr.write(done.stderr)  # the flow's log, as it would have shown
    print(f"--photos: the store is {store} (built from {photos} by colorize-preprocess)", flush=True)
