"""Hugging Face datasets' Parquet shards as sources, read in place: by row group, with ranged reads of the columns
needed only, never a whole shard in memory.

A shard's rows are its samples: the image from the `image` column (a struct of `bytes` and `path`, as the Hub's
`Image` feature writes it; a plain binary column works too) and the label from `label` (an integer class index,
or a string taken for a wnid). Class names come from the schema's `huggingface` metadata (the `ClassLabel`'s
`names`) when present. A row is a source whose path is `<shard>.parquet/<row>` (its 0-based index in the shard),
whose offset is its row group and whose size is its place in that group, so that a part reads the image column
chunk of each row group it needs once (`RowGroups`), in a bucket through ranged reads of a `RangeFile`.

Found where the shards are: SOURCE/<split>/*.parquet, the Hub's SOURCE/data/<split>-*.parquet, or one shard
given as SOURCE. A row group that does not read is a `damaged_row_group` skip naming it, the shard's other rows
kept; a shard whose footer does not read is `unreadable`; a row without image bytes is `no_image`.
"""

import functools
import json
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

from pipeline.labels import MAX_CLASSES
from pipeline.storage import location

IMAGE, LABEL = "image", "label"


@dataclass(frozen=True)
class Row:
    index: int  # in the shard
    group: int
    at: int  # in the group
    label: int | str | None


@dataclass(frozen=True)
class Skip:
    name: str  # what is recorded, below the shard: a row group, a row, or "" for the shard itself
    kind: str
    reason: str


def _file(path):
    """What pyarrow reads: a local path, or a seekable RangeFile over an object whose every read is one ranged
    GET of exactly the bytes pyarrow asks for (a footer, a column chunk)."""
    return location(path).file_or_path()


@functools.lru_cache(maxsize=64)
def _metadata(key: str, path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(_file(path)).metadata


def _open(path):
    """The shard, its footer read once per process (each row group read opens the file again: threads)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(_file(path), metadata=_metadata(str(path), path))


def class_names(pf) -> list[str] | None:
    """The `ClassLabel` names of the label column, from the schema's `huggingface` metadata, or None."""
    meta = (pf.schema_arrow.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(meta)["info"]["features"] if meta else {}
        names = features.get(LABEL, {}).get("names")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    ok = isinstance(names, list) and 0 < len(names) <= MAX_CLASSES and all(isinstance(n, str) for n in names)
    return names if ok else None


def index_shard(path) -> tuple[list[Row], list[Skip], list[str] | None]:
    """The rows of a shard with their labels, the skips (damaged row groups, rows without an image) and its
    class names. Only the label column is read, row group by row group; whether every row has image bytes
    comes from the image column's statistics (its null count), and the column itself is read only where they
    do not say none is missing."""
    try:
        pf = _open(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for bytes that are not Parquet
        return [], [Skip("", "unreadable", f"not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})")], None
    names = pf.schema_arrow.names
    if IMAGE not in names:
        return [], [Skip("", "no_image", f"no {IMAGE!r} column (columns: {', '.join(names)[:120]})")], None
    leaf = _image_leaf(pf)
    rows, skips, first = [], [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        try:
            labels = pf.read_row_group(g, columns=[LABEL]).column(LABEL).to_pylist() if LABEL in names else [None] * n
            present = _present(pf, g, leaf, n)
        except Exception as e:  # noqa: BLE001 - as above
            why = f"rows {first} to {first + n - 1} do not read ({type(e).__name__}: {str(e)[:100]})"
            skips.append(Skip(f"row-group-{g}", "damaged_row_group", why))
            first += n
            continue
        for at in range(n):
            if not present[at]:
                skips.append(Skip(str(first + at), "no_image", "the row has no image bytes"))
            else:
                rows.append(Row(first + at, g, at, _label(labels[at])))
        first += n
    return rows, skips, class_names(pf)


def _image_leaf(pf) -> int | None:
    """The index of the column chunk that holds the image bytes (`image.bytes`, or `image`), or None."""
    schema = pf.metadata.schema
    for i in range(len(schema)):
        if schema.column(i).path in (f"{IMAGE}.bytes", IMAGE):
            return i
    return None


def _present(pf, group: int, leaf: int | None, n: int) -> list[bool]:
    """Which rows of a group have image bytes: all, when the column chunk's statistics count no null."""
    stats = pf.metadata.row_group(group).column(leaf).statistics if leaf is not None else None
    if stats is not None and stats.has_null_count and stats.null_count == 0:
        return [True] * n
    return _image_bytes(pf.read_row_group(group, columns=[IMAGE]).column(IMAGE)).is_valid().to_pylist()


def _image_bytes(column):
    """The image bytes of a column: the `bytes` field of the Hub's Image struct, or the column itself."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(column.type):
        return pc.struct_field(column, "bytes")
    return column


def _label(value) -> int | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < MAX_CLASSES else None
    return value if isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable() else None


class RowGroups:
    """The image bytes of the row groups read last (a few per process), each fetched once however many threads
    ask for it at once: a part's batches take consecutive rows, mostly of one group."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._groups: OrderedDict[tuple, Future] = OrderedDict()
        self._lock = threading.Lock()

    def row(self, path, group: int, at: int) -> bytes:
        key = (str(path), group)
        with self._lock:
            pending = self._groups.get(key)
            mine = pending is None
            if mine:
                pending = self._groups[key] = Future()
                while len(self._groups) > self.keep:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(key)
        if mine:
            try:
                pending.set_result(_read_group(path, group))
            except BaseException as e:
                pending.set_exception(e)
        data = pending.result()[at]
        if data is None:
            raise OSError(f"row {at} of row group {group} has no image bytes")
        return data


def _read_group(path, group: int) -> list[bytes | None]:
    try:
        column = _open(path).read_row_group(group, columns=[IMAGE]).column(IMAGE)
        return _image_bytes(column).to_pylist()
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged group: one kind here
        raise OSError(f"row group {group} does not read ({type(e).__name__}: {str(e)[:100]})") from None


ROW_GROUPS = RowGroups()


def locate(path, row: int) -> tuple[int, int]:
    """(row group, place in it) of a shard's row."""
    meta = _open(path).metadata
    first = 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if row < first + n:
            return g, row - first
        first += n
    raise FileNotFoundError(f"no row {row} in {path}")
