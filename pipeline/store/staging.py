"""The staging area of a store being written: each part's encoded chunks and summary, and shard-done markers.

A part (a slice of the source list, one task) is staged as `_staging/part-NNNNNN.chunks` (every image's chunks
already encoded, one blob per array) and `_staging/part-NNNNNN.json` (its summary: chunk sizes, category counts,
the records of all its sources; data only, so that a file planted in a shared store cannot run code), each
atomically, the chunks first: a summary on disk means its chunks were there. The chunks go once every shard
over them is written; the summaries stay for a resumed run, which thus never holds a second copy of the store.
The part's own source list is `_staging/parts/NNNNNN.json`.
"""

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.files import atomic_write
from pipeline.discover import Source
from pipeline.store.format import StoreError, staging_dir

PARTS_DIR = "parts"


def part_path(store: Path, part: int) -> Path:
    """A staged part's summary; its presence marks the part done."""
    return staging_dir(store) / f"part-{part:06d}.json"


def part_chunks_path(store: Path, part: int) -> Path:
    """A staged part's encoded chunks, one blob per array; deleted once every shard over the part is written."""
    return staging_dir(store) / f"part-{part:06d}.chunks"


def shard_marker(store: Path, shard: int) -> Path:
    return staging_dir(store) / f"shard-{shard:06d}.done"


def part_done(store: Path, part: int) -> bool:
    return part_path(store, part).is_file()


def save_sources(store: Path, parts: list[list[Source]]) -> Path:
    """Write each part's source list into the staging area, one file per part, so that a task reads its own
    list only (a list passed as a task parameter is copied and hashed by Prefect and Dask for every task)."""
    folder = staging_dir(store) / PARTS_DIR
    folder.mkdir(exist_ok=True)
    for k, p in enumerate(parts):
        (folder / f"{k:06d}.json").write_text(json.dumps([dataclasses.astuple(s) for s in p]))
    return folder


def load_sources(folder: str | Path, part: int) -> list[Source]:
    return [Source(*s) for s in json.loads((Path(folder) / f"{part:06d}.json").read_text())]


def save_part(store: Path, part: int, chunks: dict, counts: np.ndarray, records: list[dict]) -> None:
    """Stage one part: `chunks` maps each array to (blob, chunk sizes) from `pipeline.store.chunks.encode_images`."""
    names = list(chunks)
    blobs = [memoryview(np.ascontiguousarray(chunks[name][0])).cast("B") for name in names]
    atomic_write(part_chunks_path(store, part), blobs)
    sizes = {name: np.asarray(chunks[name][1], dtype=np.int64) for name in names}
    staged = {"names": names, "sizes": {k: v.tolist() for k, v in sizes.items()}, "counts": counts.tolist()}
    atomic_write(part_path(store, part), json.dumps(staged | {"records": records}).encode())


@dataclass
class StagedPart:
    """A staged part: its summary and, once loaded, per array its chunks' bytes (a blob and each chunk's offsets)."""

    offsets: dict[str, np.ndarray]  # (n + 1,) int64 per array, into that array's blob
    counts: np.ndarray
    records: list[dict]
    blobs: dict[str, memoryview] | None = None

    @property
    def stored(self) -> int:
        return len(self.offsets["label"]) - 1

    @property
    def names(self) -> list[str]:
        return list(self.offsets)

    def chunk(self, name: str, i: int) -> memoryview:
        return self.blobs[name][self.offsets[name][i] : self.offsets[name][i + 1]]


def load_part(store: Path, part: int, chunks: bool = True) -> StagedPart:
    """A staged part's summary and, with `chunks`, its encoded chunks (StoreError if they were already freed)."""
    try:
        staged = json.loads(part_path(store, part).read_bytes())
        sizes = {name: np.asarray(staged["sizes"][name], dtype=np.int64) for name in staged["names"]}
        offsets = {name: np.concatenate([[0], np.cumsum(v)]).astype(np.int64) for name, v in sizes.items()}
        part_ = StagedPart(offsets, np.asarray(staged["counts"], dtype=np.int64), list(staged["records"]))
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(
            f"{store}: the staged summary of part {part} is damaged ({type(e).__name__}); "
            f"delete {staging_dir(store)} to restage"
        ) from None
    if chunks:
        try:
            data = memoryview(part_chunks_path(store, part).read_bytes())
        except FileNotFoundError as e:
            raise StoreError(f"{store}: staged part {part} has no chunks left, yet a shard over it is unwritten") from e
        start, part_.blobs = 0, {}
        for name, off in offsets.items():
            part_.blobs[name] = data[start : start + int(off[-1])]
            start += int(off[-1])
        if start != len(data):
            raise StoreError(f"{store}: staged part {part} holds {len(data)} bytes of chunks, its summary {start}")
    return part_


def staged_summary(store: str, part: int) -> dict:
    """The summary of a part staged by an earlier (possibly killed) run, as `process_part` returns it."""
    staged = load_part(Path(store), part, chunks=False)
    summary = {"part": part, "stored": staged.stored, "counts": staged.counts, "records": staged.records}
    return summary | {"pid": os.getpid()}


def free_part_chunks(store: Path, part: int, first: int, count: int, shard_images: int) -> bool:
    """Delete part's staged chunks if every shard over its images (first ... first + count) is written."""
    shards = range(first // shard_images, -(-(first + count) // shard_images))
    if all(shard_marker(store, k).is_file() for k in shards):
        part_chunks_path(store, part).unlink(missing_ok=True)
        return True
    return False
