"""The store's format: its layout, its names, and how a reader opens a finished store (docs/store.md is the
reference).

A Zarr v3 group per split, in a local folder or an object store prefix:

    L        uint8  [slots, S, S]      round(L * 255 / 100) of the S x S crop
    bins     int16  [slots, S/4, S/4]  category (Eq. 7-8) of each 4 x 4 block's mean (a, b)
    bins_full int16 [slots, S, S]      category of every pixel (only with --full-bins)
    label    int16  [slots]            class index, -1 = unknown (and at an empty slot)
    slots    int64  [N]                the slot of each stored image, increasing
    path     str    [N]                each image's source, relative to the source root
    prior    float64 [313]             empirical prior of `bins` (Eq. 9)
    weights  float32 [313]             balance weights (Eq. 10), sum(prior * weights) = 1
    sources.jsonl                      every source: stored (with its index and slot) or skipped (with its reason)

Slot s belongs to the s-th source of the run's sorted source list, so each part of the list owns whole shards
and writes them itself; a source that was skipped leaves its slot empty (an absent chunk). Image i of the
store lies at slot `slots[i]`. One image per chunk, `shard_images` slots per shard. Format 3 had no slots (its
image i lay at index i) and is still read.
"""

import hashlib
import json
from dataclasses import asdict

import numpy as np

from pipeline.common.cli import Refused
from pipeline.common.storage import ObjectPath, location

FORMAT = "colorize-store"
FORMAT_VERSION = 4  # 4: slots, shards written by each part; 3: dense arrays, L coded by `colorize.med_rans`
READABLE_VERSIONS = (3, 4)  # this one and the one before
STAGING = "_staging"
ARRAY_NDIM = {"L": 3, "bins": 3, "bins_full": 3, "label": 1}  # the per-slot arrays, by number of dimensions
MANIFEST = "sources.jsonl"
# Everything a store folder may hold: the group, its arrays, the manifest and a run's staging area.
STORE_ENTRIES = frozenset({"zarr.json", MANIFEST, STAGING, *ARRAY_NDIM, "slots", "path", "prior", "weights"})


class StoreError(Refused, RuntimeError):
    """A store that cannot be used: missing, incomplete, built with other settings, or damaged."""


def config_digest(cfg) -> str:
    """A digest of every setting that changes the store's content."""
    settings = asdict(cfg) | {"format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def staging_dir(store):
    return location(store) / STAGING


def shard_key(name: str, shard: int) -> str:
    """The shard file of array `name` holding slots shard * shard_images ... (zarr's default chunk keys)."""
    return "/".join([name, "c", str(shard)] + ["0"] * (ARRAY_NDIM[name] - 1))


def zarr_root(store, read_only: bool = False):
    """What zarr.open_group takes for a store: a local path, or zarr-python's ObjectStore for a prefix."""
    store = location(store)
    return store.zarr_store(read_only) if isinstance(store, ObjectPath) else str(store)


def image_slots(group) -> np.ndarray:
    """int64 (N,): the slot of each stored image (format 3: image i at index i)."""
    if "slots" in group:
        return np.asarray(group["slots"][:], dtype=np.int64)
    return np.arange(int(group.attrs["n_images"]), dtype=np.int64)


def read_slots(group, name: str, slots: np.ndarray, where="") -> np.ndarray:
    """group[name] at `slots`, in their order; a chunk that does not decode (its crc32c fails, say) is a
    StoreError naming the shard file and the image, as the loader names them."""
    slots = np.asarray(slots, dtype=np.int64)
    order = np.argsort(slots, kind="stable")
    arr = group[name]
    try:
        data = np.asarray(arr.oindex[slots[order]])
    except Exception as e:  # noqa: BLE001 - zarr raises many kinds for a damaged chunk; each is this refusal
        per = arr.shards[0] if arr.shards else arr.chunks[0]
        for slot in slots[order]:
            try:
                arr[int(slot)]
            except Exception:  # noqa: BLE001 - the first slot that fails alone is the damaged one
                image = int(np.searchsorted(image_slots(group), slot))
                key = f"{name}/c/{slot // per}" + "/0" * (arr.ndim - 1)
                raise StoreError(f"{where or 'the store'}: the chunk of image {image} in shard {key} does not "
                                 f"decode ({type(e).__name__})") from None  # fmt: skip
        raise
    out = np.empty_like(data)
    out[order] = data
    return out


def missing_shards(group, store) -> list[str]:
    """The shard files of the per-slot arrays that should exist and do not (a deleted shard reads as zeros)."""
    store = location(store)
    expected = []
    for name in ARRAY_NDIM:
        if name in group:
            arr = group[name]
            step = arr.shards[0] if arr.shards else arr.chunks[0]
            expected += [shard_key(name, k) for k in range(-(-arr.shape[0] // step))]
    if isinstance(store, ObjectPath):  # one listing per array, not one request per shard
        present = set()
        for name in ARRAY_NDIM:
            if name in group:
                present |= {str(p.relative_to(store)) for p in (store / name / "c").walk_files()}
        return [k for k in expected if k not in present]
    return [k for k in expected if not (store / k).is_file()]


def open_store(path, mode: str = "r", check_shards: bool = True):
    """The Zarr group of a finished store; StoreError if it is missing, incomplete or of another format."""
    import zarr

    store = location(path)
    if not (store / "zarr.json").is_file():
        raise StoreError(f"{store} is not a Zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(zarr_root(store, read_only=mode == "r"), mode=mode)
    except Exception as e:  # noqa: BLE001 - any failure to open is reported the same way
        raise StoreError(f"{store}: cannot open the store: {type(e).__name__}: {e}") from e
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{store} is not a {FORMAT} store")
    if attrs.get("format_version") not in READABLE_VERSIONS:
        raise StoreError(f"{store} has format version {attrs.get('format_version')}, readable: {READABLE_VERSIONS}")
    if not attrs.get("complete"):
        raise StoreError(f"{store} is incomplete (its preprocessing run has not finished)")
    if check_shards:
        gone = missing_shards(group, store)
        if gone:
            raise StoreError(f"{store} is damaged: {len(gone)} shard file(s) missing, e.g. {gone[0]}")
    return group
