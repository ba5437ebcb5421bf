"""The staging area of a store being written (`STORE/_staging/`, under the store's own prefix): what a run needs to
resume, and nothing of the images themselves (each part writes its shards straight into the store).

- `config.json`: the settings' digest (`pipeline.store.lifecycle.begin`);
- `parts/NNNNNN.json`: each part's list of sources, so that a task reads its own list only (a list passed as a
  task parameter is copied and hashed by Prefect and Dask for every task);
- `part-NNNNNN.json`: a part's summary (category counts, the records of its sources), written after every shard
  of the part: its presence marks the part done. Data only, so that a file planted in a store that many
  workers share cannot run code.

Every file is written whole or not at all (`pipeline.storage.files.atomic_write`); `finalize` removes the area.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from kernels.gamut import Q
from pipeline.common.cli import one_line
from pipeline.discover import Source
from pipeline.storage.files import atomic_write, read_bounded
from pipeline.store.format import StoreError, staging_dir

PARTS_DIR = "parts"
MAX_STAGED = 256 << 20  # bytes of a staged file: a part of 2,048 sources takes under 1 MB


def part_path(store, part: int):
    """A staged part's summary; its presence marks the part done."""
    return staging_dir(store) / f"part-{part:06d}.json"


def part_done(store, part: int) -> bool:
    return part_path(store, part).is_file()


def save_sources(store, parts: list) -> str:
    """Write each part's first slot and source list (`pipeline.part.Part`) into the staging area, one file per
    part; returns the folder."""
    folder = staging_dir(store) / PARTS_DIR
    folder.mkdir(exist_ok=True, parents=True)
    for k, p in enumerate(parts):
        rows = [(s.path, s.wnid, s.label, s.offset, s.size) for s in p.sources]  # not astuple: it deep-copies
        staged = {"first_slot": p.first_slot, "sources": rows}
        atomic_write(folder / f"{k:06d}.json", json.dumps(staged).encode(), sync=False)
    return str(folder)


def load_sources(folder, part: int):
    """A part's first slot and sources (`pipeline.part.Part`) as `save_sources` wrote them."""
    from pipeline.part import Part
    from pipeline.storage import location

    staged = json.loads(read_bounded(location(folder) / f"{part:06d}.json", MAX_STAGED))
    return Part(int(staged["first_slot"]), [Source(*s) for s in staged["sources"]])


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


def load_part(store, part: int, slots: range | None = None) -> StagedPart:
    """A staged part's summary, checked as data before it is used (its counts, its records' fields and, given the
    part's `slots`, that each stored record's slot is one of them, increasing); StoreError naming it otherwise."""
    try:
        staged = json.loads(read_bounded(part_path(store, part), MAX_STAGED))
        counts, records = staged["counts"], staged["records"]
        if not (isinstance(counts, list) and len(counts) == Q and all(type(c) is int and c >= 0 for c in counts)):
            raise ValueError(f"counts: not {Q} whole numbers")
        if not isinstance(records, list):
            raise TypeError("records: not a list")
        last = -1
        for k, r in enumerate(records):
            why = _bad_record(r, slots, last)
            if why:
                raise ValueError(f"record {k}: {why}")
            last = r["slot"] if r["outcome"] == "stored" else last
        return StagedPart(np.asarray(counts, dtype=np.int64), records)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise StoreError(f"{store}: the staged summary of part {part} is damaged ({one_line(e)[:100]}); "
                         f"delete {staging_dir(store)} to restage") from None  # fmt: skip


def _bad_record(r, slots: range | None, last: int) -> str:
    """Why a staged record is not one a part writes ('' if it is)."""
    if not isinstance(r, dict) or not isinstance(r.get("path"), str):
        return "not a record with a path"
    if r.get("outcome") == "skipped":
        return "" if isinstance(r.get("kind"), str) and isinstance(r.get("reason"), str) else "a skip without a kind"
    if r.get("outcome") != "stored":
        return "outcome neither stored nor skipped"
    slot = r.get("slot")
    if type(slot) is not int or slot <= last or (slots is not None and slot not in slots):
        return f"slot {slot!r:.20} not an increasing slot of the part"
    return ""


def staged_summary(store: str, part: int, slots: range | None = None) -> dict:
    """The summary of a part staged by an earlier (possibly killed) run, as `process_part` returns it."""
    staged = load_part(store, part, slots)
    summary = {"part": part, "stored": staged.stored, "counts": staged.counts, "records": staged.records}
    return summary | {"pid": os.getpid()}
