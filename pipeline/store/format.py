"""The store's format: its layout, its names, and how a reader opens a finished store (docs/store.md is the
reference).

A Zarr v3 group per split, in a local folder or an object store prefix:

    L        uint8  [slots, S, S]      round(L * 255 / 100) of the S x S crop
    bins     int16  [slots, S/4, S/4]  category (Eq. 7-8) of each 4 x 4 block's mean (a, b)
    bins_full int16 [slots, S, S]      category of every pixel (stores written before it was dropped: read, unused)
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
import re

import numpy as np

from pipeline.common.cli import Unusable, one_line
from pipeline.storage import location
from pipeline.storage.files import read_bounded

FORMAT = "colorize-store"
MAX_IMAGES = 1 << 31  # images or slots in one store: 1,600 ImageNets; a count beyond is a damaged zarr.json
LISTED_ABOVE = 1 << 22  # slots: a store claiming more has its shards counted on open (its slots take 32 MB)
INDEX = re.compile(r"0|[1-9][0-9]*", re.ASCII)  # a chunk index as zarr writes it: ASCII digits, no leading 0
MAX_SHARD_IMAGES = 1 << 16  # images in one shard file (the flow writes 64)
MAX_SIZE = 8192  # S: the side of a stored crop
MAX_META = 1 << 20  # bytes of an array's zarr.json (this project's are under 2 kB)
MAX_GROUP_META = 64 << 20  # bytes of the group's zarr.json (its attributes hold every class name)
FORMAT_VERSION = 4  # 4: slots, shards written by each part; 3: dense arrays, L coded by `colorize.med_rans`
READABLE_VERSIONS = (3, 4)  # this one and the one before
STAGING = "_staging"
ARRAY_NDIM = {"L": 3, "bins": 3, "bins_full": 3, "label": 1}  # the per-slot arrays, by number of dimensions
MANIFEST = "sources.jsonl"
ARRAYS = (*ARRAY_NDIM, "slots", "path", "prior", "weights")
# Everything a store folder may hold at its top: the group, its arrays, the manifest and a run's staging area.
STORE_ENTRIES = frozenset({"zarr.json", MANIFEST, STAGING, *ARRAYS})


class StoreError(Unusable, RuntimeError):
    """A store that cannot be used: missing, incomplete, built with other settings, or damaged."""


def config_digest(cfg) -> str:
    """A digest of every setting that changes the store's content."""
    settings = cfg.record() | {"format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def staging_dir(store):
    return location(store) / STAGING


def shard_key(name: str, shard: int) -> str:
    """The shard file of array `name` holding slots shard * shard_images ... (zarr's default chunk keys)."""
    return "/".join([name, "c", str(shard)] + ["0"] * (ARRAY_NDIM[name] - 1))


def zarr_root(store, read_only: bool = False):
    """What zarr.open_group takes for a store: a local path, or zarr-python's ObjectStore for a prefix."""
    store = location(store)
    return store.zarr_store(read_only)


def image_slots(group) -> np.ndarray:
    """int64 (N,): the slot of each stored image (format 3: image i at index i); StoreError if the array does not
    read (its chunks do not fit its metadata, say)."""
    if "slots" not in group:
        return np.arange(int(group.attrs["n_images"]), dtype=np.int64)
    try:
        return np.asarray(group["slots"][:], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - zarr raises many kinds for metadata and chunks that disagree
        why = f"{type(e).__name__}: {one_line(e)[:100]}"
        raise StoreError(f"{group.store}: array slots does not read ({why})") from None


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


def read_meta(path, limit: int = MAX_META, missing_ok: bool = False) -> dict | None:
    """A metadata file (`zarr.json`) as a mapping (None if it is missing and missing_ok); StoreError naming it if it
    is bigger than `limit` bytes or is not a JSON mapping (read with the limit, so a hostile file costs no more
    memory than that)."""
    path = location(path)
    try:
        data = read_bounded(path, limit)
        meta = json.loads(data)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise StoreError(f"{path} is missing") from None
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is damaged ({one_line(e)[:120]})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path} is damaged (a {type(meta).__name__}, not a mapping)")
    return meta


def _whole(value, high: int, low: int = 0) -> bool:
    return type(value) is int and low <= value <= high


def check_layout(group, store) -> None:
    """StoreError, in one line and before anything is allocated from them, if the store's counts and shapes do not
    agree with each other or pass sane limits: n_images <= n_slots <= MAX_IMAGES, every per-slot array n_slots
    long with its item shape from S, shards of 1 to MAX_SHARD_IMAGES images, `slots` n_images long."""
    attrs = group.attrs
    n, version = attrs.get("n_images"), attrs.get("format_version")
    n_slots = attrs.get("n_slots", n) if version != 3 else n
    if not _whole(n, MAX_IMAGES) or not _whole(n_slots, MAX_IMAGES, n):
        raise StoreError(f"{store}: n_images {n!r} and n_slots {n_slots!r} are not whole numbers with n_images <= "
                         f"n_slots <= {MAX_IMAGES}")  # fmt: skip
    size = attrs.get("S")
    if not _whole(size, MAX_SIZE, 4) or size % 4:
        raise StoreError(f"{store}: S {size!r} is not a multiple of 4 from 4 to {MAX_SIZE}")
    items = {"L": (size, size), "bins": (size // 4, size // 4), "bins_full": (size, size), "label": ()}
    for name in ("L", "bins", "label", "bins_full"):
        if name not in group:
            if name == "bins_full":
                continue
            raise StoreError(f"{store}: array {name} is missing")
        arr = group[name]
        per = (arr.shards or arr.chunks)[0]
        if arr.shape != (n_slots, *items[name]) or not _whole(per, MAX_SHARD_IMAGES, 1):
            raise StoreError(f"{store}: array {name} has shape {arr.shape} in shards of {per}; the store says "
                             f"{(n_slots, *items[name])} in shards of 1 to {MAX_SHARD_IMAGES}")  # fmt: skip
    for name in ("slots", "path", "prior", "weights"):
        if name in group and not all(_whole(c, MAX_IMAGES, 1) for c in group[name].chunks):
            raise StoreError(f"{store}: array {name} has chunks of {group[name].chunks}")
    if "slots" in group and group["slots"].shape != (n,):
        raise StoreError(f"{store}: array slots has shape {group['slots'].shape}, the store says ({n},)")
    check_attributes(attrs, store)


def check_attributes(attrs, store) -> None:
    """StoreError if an attribute that readers use is not of the kind the writer gives it (a hostile or hand-edited
    zarr.json), so that a command refuses the store in one line instead of failing where the value is used."""
    lam = attrs.get("lambda", 0.5)
    if type(lam) not in (int, float) or not 0 <= lam <= 1:  # a bool, a string or NaN fails too
        raise StoreError(f"{store}: lambda {lam!r:.40} is not a number in [0, 1]")
    for key, kind in (("config", dict), ("counts", dict), ("classes", list), ("build_id", str)):
        if key in attrs and type(attrs[key]) is not kind:
            raise StoreError(f"{store}: attribute {key} is not a {kind.__name__}")
    if not all(type(c) is str for c in attrs.get("classes", [])):
        raise StoreError(f"{store}: attribute classes is not a list of names")
    config = attrs.get("config", {})
    if type(config.get("source", "")) is not str or not _whole(config.get("size", 4), MAX_SIZE, 1):
        raise StoreError(f"{store}: attribute config does not give its source as text and a size")


def source_of(group, store):
    """The source the store was built from (its config's), as a location carrying the store's storage options."""
    return location(group.attrs["config"]["source"], dict(location(store).options))


def missing_shards(group, store, show: int = 5) -> tuple[int, list[str]]:
    """(how many shard files of the per-slot arrays should exist and do not, or are shorter than their index, the
    first `show` of them): a deleted shard reads as zeros. Costs one listing per array, never one key per
    expected shard; and since every slot takes 16 bytes of its shard's index, a store whose shards are all there
    holds at least 16 bytes per slot it claims, which bounds what is allocated from n_slots."""
    from pipeline.store.chunks import index_bytes

    store = location(store)
    gone, shown = 0, []
    for name, ndim in ARRAY_NDIM.items():
        if name not in group:
            continue
        arr = group[name]
        per = arr.shards[0] if arr.shards else arr.chunks[0]
        count = -(-arr.shape[0] // per)
        tail = ["0"] * (ndim - 1)
        least = index_bytes(per)  # a shard holds at least its index: one smaller is damaged, and counted missing
        listed = (store / name / "c").listed()
        present = {int(k[0]) for k, (size, _) in ((k.split("/"), v) for k, v in listed.items())
                   if INDEX.fullmatch(k[0]) and k[1:] == tail and size >= least}  # fmt: skip
        present = {k for k in present if k < count}
        gone += count - len(present)
        k, need = 0, min(show - len(shown), count - len(present))
        while need > 0 and k < count:  # at most len(present) + need steps
            if k not in present:
                shown.append(shard_key(name, k))
                need -= 1
            k += 1
    return gone, shown


def open_store(path, mode: str = "r"):
    """The Zarr group of a finished store; StoreError if it is missing, incomplete or of another format. Its shard
    files are not listed here (a listing of every shard at ImageNet's scale): `colorize-quality` counts them, and a
    reader names the one it cannot read. Only a store that claims more than LISTED_ABOVE slots has its shards
    counted here, before anything is allocated from that claim: a hostile count then costs its author the bytes."""
    import zarr

    store = location(path)
    if not (store / "zarr.json").is_file():
        raise StoreError(f"{store} is not a Zarr v3 store (no zarr.json)")
    read_meta(store / "zarr.json", MAX_GROUP_META)
    for name in ARRAYS:  # zarr reads what it opens whole: each is bounded first (one request each)
        read_meta(store / name / "zarr.json", missing_ok=True)
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
    try:
        check_layout(group, store)
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # metadata zarr parsed, but not a store's
        raise StoreError(f"{store}: its metadata does not describe a store ({one_line(e)[:120]})") from None
    if int(group.attrs.get("n_slots", group.attrs["n_images"])) > LISTED_ABOVE:
        gone, shown = missing_shards(group, store)
        if gone:
            raise StoreError(f"{store} is damaged: {gone} shard file(s) missing, e.g. {shown[0]}")
    return group
