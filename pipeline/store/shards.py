"""The per-image arrays of a store and their shard files, written whole from the staged parts.

Each Zarr shard is written by one process only (concurrent partial writes of a shard lose data:
github.com/zarr-developers/zarr-python/issues/3682): the staged chunks of the images it holds, concatenated,
then the sharding index (`pipeline.store.chunks.shard_file`), under a temp name in the staging area, renamed
into place, then marked done.
"""

from pathlib import Path

import numpy as np

from pipeline.common.files import atomic_write
from pipeline.store.format import ARRAY_NDIM, shard_key, staging_dir
from pipeline.store.staging import StagedPart, free_part_chunks, load_part, shard_marker


def create_arrays(
    store: Path, n: int, size: int, full_bins: bool, shard_images: int, level: int, l_codec: str = "med_rans"
) -> None:
    """Create the per-image arrays for up to n images (`resize_arrays` sets the final N).

    Arrays left by a killed run with the same layout are kept (grown back to n if they were shrunk), so
    their finished shards stay valid; an array created anew invalidates every shard-done marker. The codecs are
    `pipeline.store.chunks.array_codecs`: the shard files are written from bytes encoded with the same chain.
    """
    import zarr

    from pipeline.store.chunks import array_codecs

    group = zarr.open_group(store, mode="a", zarr_format=3)
    h = size // 4
    specs = {"L": ((size, size), np.uint8), "bins": ((h, h), np.int16), "label": ((), np.int16)}
    if full_bins:
        specs["bins_full"] = ((size, size), np.int16)
    for name, (tail, dtype) in specs.items():
        if name in group:
            arr = group[name]
            if arr.shape[1:] == tail and arr.dtype == dtype and arr.shape[0] <= n and arr.shards[0] == shard_images:
                if arr.shape[0] < n:
                    arr.resize((n, *tail))
                continue
        for marker in staging_dir(store).glob("shard-*.done"):
            marker.unlink()
        group.create_array(
            name,
            shape=(n, *tail),
            dtype=dtype,
            chunks=(1, *tail),
            shards=(shard_images, *tail),
            fill_value=0 if name != "label" else -1,
            overwrite=True,
            **array_codecs(name, dtype, level, l_codec).zarr_codecs(),
        )


def resize_arrays(store: Path, n: int) -> None:
    """Shrink the per-image arrays to the n images stored (shards past n are deleted by zarr)."""
    import zarr

    group = zarr.open_group(store, mode="r+")
    for name in ARRAY_NDIM:
        if name in group and group[name].shape[0] != n:
            group[name].resize((n, *group[name].shape[1:]))


def write_shard(
    store: Path, shard: int, shard_images: int, layout: list[tuple[int, int, int]], parts: dict | None = None
) -> int:
    """Write Zarr shard `shard` of every image array from the staged parts; returns its image count.

    layout: (part, first global index, image count) of the staged prefix of the parts, in order; the shard
    ends at the end of that prefix at the latest. parts: staged parts already loaded, by number (filled here);
    a caller writing shards in order passes one dict, so that no part is read twice.
    """
    from pipeline.store.chunks import shard_file

    parts = {} if parts is None else parts
    end = layout[-1][1] + layout[-1][2] if layout else 0
    lo, hi = shard * shard_images, min(end, (shard + 1) * shard_images)
    pieces: list[tuple[StagedPart, int, int]] = []
    under: list[tuple[int, int, int]] = []  # the layout entries of the parts this shard holds images of
    for part, first, count in layout:
        a, b = max(lo, first), min(hi, first + count)
        if a < b:
            if part not in parts:
                parts[part] = load_part(store, part)
            pieces.append((parts[part], a - first, b - first))
            under.append((part, first, count))
    for name in pieces[0][0].names if pieces else ():
        chunks = [p.chunk(name, i) for p, a, b in pieces for i in range(a, b)]
        path = Path(store) / shard_key(name, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, shard_file(chunks, shard_images), sync=False, tmp_dir=staging_dir(store))
    atomic_write(shard_marker(store, shard), b"", sync=False)
    for part, first, count in under:  # parts ending in this shard: freed once all their shards are written
        if first + count <= hi and free_part_chunks(store, part, first, count, shard_images):
            parts.pop(part)
    return hi - lo
