"""`colorize-train --photos DIR_OR_URL`: the store of a user's photos, built inside the run's folder by the
preprocessing flow (`colorize-preprocess`, run as a command: training does not import the flows) and reused by a
later call on the same --out, such as a --resume."""

import subprocess
import sys

from pipeline.common.cli import Refused

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
    except (Refused, OSError, ValueError):
        pass  # absent or unfinished: the flow builds it, or finishes it where it stopped
    print(f"--photos: building the store {store} from {photos} (colorize-preprocess)", flush=True)
    parent, _, name = photos.rstrip("/").rpartition("/")  # the photos' folder is the split: flat or class folders
    source = parent or "."
    if source.endswith(":/"):  # a bucket's root, s3://bucket: the source is the bucket
        source += "/"
    cmd = [sys.executable, "-m", "flows.preprocess", source, store, "--split", name, "--size", str(size),
           "--no-quality"]  # fmt: skip
    code = subprocess.call(cmd)
    if code:
        raise Refused(f"--photos {photos}: the store was not built (colorize-preprocess exited with {code})")
    print(f"--photos: the store is {store}", flush=True)
