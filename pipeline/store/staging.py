"""The staging area of a store being written (`STORE/_staging/`, under the store's own prefix): what a run needs to
resume, and nothing of the images themselves (each part writes its shards straight into the store).

- `config.json`: the settings' digest (`pipeline.store.lifecycle.begin`);
- `parts/NNNNNN.json`: each part's list of sources, so that a task reads its own list only (a list passed as a
  task parameter is copied and hashed by Prefect and Dask for every task);
- `part-NNNNNN.json`: a part's summary (category counts, the records of its sources), written after every shard
  of the part: its presence marks the part done. Data only, so that a file planted in a store that many
  workers share cannot run code.

Every file is written whole or not at all (`pipeline.common.files.atomic_write`); `finalize` removes the area.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from pipeline.common.files import atomic_write, read_bounded
from pipeline.discover import Source
from pipeline.store.format import StoreError, staging_dir

PARTS_DIR = "parts"
MAX_STAGED = 256 << 20  # bytes of a staged file: a part of 2,048 sources takes under 1 MB


def part_path(store, part: int):
    """A staged part's summary; its presence marks the part done."""
    return staging_dir(store) / f"part-{part:06d}.json"


def part_done(store, part: int) -> bool:
    return part_path(store, part).is_file()


def save_sources(store, parts: list[list[Source]]) -> str:
    """Write each part's source list into the staging area, one file per part; returns the folder."""
    folder = staging_dir(store) / PARTS_DIR
    folder.mkdir(exist_ok=True, parents=True)
    for k, p in enumerate(parts):
        rows = [(s.path, s.wnid, s.label, s.offset, s.size) for s in p]  # not dataclasses.astuple: it deep-copies
        atomic_write(folder / f"{k:06d}.json", json.dumps(rows).encode(), sync=False)
    return str(folder)


def load_sources(folder, part: int) -> list[Source]:
    from pipeline.common.storage import location

    return [Source(*s) for s in json.loads(read_bounded(location(folder) / f"{part:06d}.json", MAX_STAGED))]


@dataclass
class StagedPart:
    """A staged part's summary: its category counts and the records of all its sources."""

    counts: np.ndarray
    records: list[dict]

    @property
    def stored(self) -> int:
        return sum(r["outcome"] == "stored" for r in self.records)


def save_part(store, part: int, counts: np.ndarray, records: list[dict]) -> None:
    """Mark a part done, once every shard of it is written."""
    staged = {"counts": np.asarray(counts, dtype=np.int64).tolist(), "records": records}
    atomic_write(part_path(store, part), json.dumps(staged).encode())


def load_part(store, part: int) -> StagedPart:
    """A staged part's summary (StoreError naming it if it is damaged)."""
    try:
        staged = json.loads(read_bounded(part_path(store, part), MAX_STAGED))
        return StagedPart(np.asarray(staged["counts"], dtype=np.int64), list(staged["records"]))
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{store}: the staged summary of part {part} is damaged ({type(e).__name__}); "
                         f"delete {staging_dir(store)} to restage") from None  # fmt: skip


def staged_summary(store: str, part: int) -> dict:
    """The summary of a part staged by an earlier (possibly killed) run, as `process_part` returns it."""
    staged = load_part(store, part)
    summary = {"part": part, "stored": staged.stored, "counts": staged.counts, "records": staged.records}
    return summary | {"pid": os.getpid()}
