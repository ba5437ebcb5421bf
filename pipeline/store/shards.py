"""The per-slot arrays of a store and their shard files, each written whole by the part that owns its slots.

A part owns whole shards (its first slot and its length are multiples of `shard_images`, but for the last), so
no shard has two writers: concurrent partial writes of one shard lose data
(github.com/zarr-developers/zarr-python/issues/3682). A shard file is its present chunks, then the sharding index
(`pipeline.store.chunks.shard_file`; a skipped source's slot is an absent chunk), written whole: locally under a
temp name in the staging area, then renamed into place; in an object store with one PUT.
"""

import numpy as np

from pipeline.storage import location
from pipeline.storage.files import atomic_write
from pipeline.store.format import shard_key, staging_dir, zarr_root


def array_specs(size: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """(per-slot shape, dtype) of each array."""
    h = size // 4
    return {"L": ((size, size), np.uint8), "bins": ((h, h), np.int16), "label": ((), np.int16)}


def create_arrays(store, n: int, size: int, shard_images: int, level: int, l_codec: str = "med_rans") -> None:
    """Create the metadata of the per-slot arrays, n slots each; arrays a killed run left with the same layout are
    kept, with the shards written in them. The codecs are `pipeline.store.arrays.array_codecs`: the shard files
    are written from bytes encoded with the same chain."""
    import zarr

    from pipeline.store.arrays import array_codecs
    from pipeline.store.ownership import remove_own

    group = zarr.open_group(zarr_root(store), mode="a", zarr_format=3)
    for name, (tail, dtype) in array_specs(size).items():
        if name in group:
            arr = group[name]
            if arr.shape == (n, *tail) and arr.dtype == dtype and arr.shards[0] == shard_images:
                continue
            remove_own(store, below=(name,))  # its own files only: anything else there is refused
        group.create_array(
            name,
            shape=(n, *tail),
            dtype=dtype,
            chunks=(1, *tail),
            shards=(shard_images, *tail),
            fill_value=0 if name != "label" else -1,
            **array_codecs(name, dtype, level, l_codec).zarr_codecs(),
        )


def write_shard(store, shard: int, shard_images: int, chunks: dict[str, list]) -> None:
    """Write shard `shard` of every array from the encoded chunks of its slots (None: an empty slot)."""
    from pipeline.store.chunks import shard_file

    store = location(store)
    tmp = staging_dir(store)
    for name, parts in chunks.items():
        path = store / shard_key(name, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, shard_file(parts, shard_images), sync=False, tmp_dir=tmp)


def slot_shards(first: int, count: int, shard_images: int) -> range:
    """The shards over slots first ... first + count - 1."""
    return range(first // shard_images, -(-(first + count) // shard_images))
