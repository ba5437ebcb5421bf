"""How a run begins and ends: what it may touch, what it finds (nothing, a killed run to resume, a finished
store), and the metadata it writes last (`finalize`), with `complete: true`.

`--overwrite` replaces only a folder that is this project's store (or a killed run's staging) and holds nothing
else at any depth, never SOURCE, a folder above it or a folder the sources are read from; only the files the
store's own metadata accounts for are deleted (`pipeline.store.ownership`), never the folder itself. A store
being written by another run (a live lease in its staging area) is refused. Works alike on a local folder and
an object store prefix.
"""

import contextlib
import enum
import json
import logging
import uuid

import numpy as np

from pipeline.storage import lease, location
from pipeline.storage.files import atomic_write, read_bounded
from pipeline.store.format import (
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    MAX_GROUP_META,
    STAGING,
    StoreError,
    config_digest,
    staging_dir,
    zarr_root,
)
from pipeline.store.ownership import LEASE, foreign, is_own, refuse_foreign, remove_own
from pipeline.store.staging import load_part

LEASE_KEY = f"{STAGING}/{LEASE}"
log = logging.getLogger("colorize.store")


class StoreState(enum.Enum):
    """What `begin` found: nothing to resume, a killed run's staging to resume, or a finished store."""

    NEW = "new"
    RESUME = "resume"
    DONE = "done"


def _is_own(store) -> bool:
    """Whether a folder is recognisably this project's store: its group says so, or a run's staging does, or it
    holds nothing but the staging area of a run killed while it began (empty, or its lease or temp files)."""
    meta, stamp = store / "zarr.json", staging_dir(store) / "config.json"
    if [p.name for p in store.iterdir()] == [STAGING]:
        if all(is_own(f"{STAGING}/{p.name}", {}) for p in staging_dir(store).iterdir()):
            return True
    try:
        if meta.is_file() and json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT:
            return True
        return stamp.is_file() and "digest" in json.loads(stamp.read_text())
    except (FileNotFoundError, ValueError, AttributeError):
        return False


def _mapping(path, fix: str) -> dict:
    """A JSON file of a mapping ({} when absent); StoreError naming the file when it is anything else."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(read_bounded(path, MAX_GROUP_META))
    except (ValueError, RecursionError) as e:
        raise StoreError(f"{path} is damaged (not JSON: {type(e).__name__}); {fix}") from None
    if not isinstance(value, dict):
        raise StoreError(f"{path} is damaged (a {type(value).__name__}, not a mapping); {fix}")
    return value


def check_staging(store) -> None:
    """A store's metadata and a killed run's staged files, read as the run will read them, so that a damaged one
    is refused in one line before the flow starts (StoreError naming the file)."""
    store = location(store)
    if not store.is_dir():
        return
    _mapping(store / "zarr.json", "delete the store or choose another folder")
    staging = staging_dir(store)
    _mapping(staging / "config.json", f"delete {staging} to restage")
    if staging.is_dir():
        for p in staging.iterdir():
            name = p.name.removeprefix("part-").removesuffix(".json")
            if p.name.startswith("part-") and p.name.endswith(".json") and INDEX.fullmatch(name.lstrip("0") or "0"):
                load_part(store, int(name), _part_slots(staging, int(name)))


def _part_slots(staging, part: int) -> range | None:
    """The slots a staged part owns, from its source list (None when it does not read: the run rewrites it)."""
    from pipeline.store.staging import PARTS_DIR, load_sources

    try:
        staged = load_sources(staging / PARTS_DIR, part)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return range(staged.first_slot, staged.first_slot + len(staged.sources))


def foreign_entries(store) -> list[str]:
    """What a store folder holds beyond the store's own files, at any depth: what `--overwrite` refuses to delete."""
    return foreign(store)


_HELD: dict[str, lease.Lease] = {}  # leases this process took before its run (`hold`), by resolved store


@contextlib.contextmanager
def _leased(where):
    """The lease of the store at `where`, taken and given back. Locally, the staging folder is removed once it is
    empty, and so is the store folder if it was made here and nothing is left in it (a refusal, a finished store)."""
    with where.tidy(staging_dir(where)):
        with lease.Lease(where / LEASE_KEY, "colorize-preprocess", f"store {where}") as held:
            yield held


@contextlib.contextmanager
def hold(store):
    """Take `store`'s lease now (LeaseHeld, one line, if another run writes it) and keep it until the block ends:
    a command takes it before it starts its flow, and `lease_of` in the flow uses it."""
    where = location(store).resolve()
    key = str(where)
    with _leased(where) as held:
        _HELD[key] = held
        try:
            yield held
        finally:
            _HELD.pop(key, None)


def held_here(store) -> str | None:
    """The id of the lease this process took on `store` with `hold`, or None."""
    held = _HELD.get(str(location(store).resolve()))
    return held.record["owner"] if held is not None else None


@contextlib.contextmanager
def lease_of(store):
    """The lease a run holds while it writes `store` (one writer per store): the one this process took with `hold`,
    or one taken here and given back at the end."""
    where = location(store).resolve()
    if str(where) in _HELD:
        yield _HELD[str(where)]
        return
    with _leased(where) as held:
        yield held


def check_owner(store, owner: str, what: str) -> None:
    """LeaseLost unless the run whose lease id is `owner` still holds the store's lease (a task of a run that lost
    it, left queued on a worker, must not write)."""
    found = lease.read(location(store) / LEASE_KEY)
    if found is None or found[0].get("owner") != owner:
        raise lease.LeaseLost(f"store {location(store)}: {what}: the run that started it no longer holds the store's "
                              "lease; not written")  # fmt: skip


def check_not_busy(store, owner: str | None = None) -> None:
    """LeaseHeld, in one line, when another run (not the lease holder `owner`) is writing `store` now."""
    held = lease.holder(location(store) / LEASE_KEY)
    if held is not None and held.get("owner") != owner:
        raise lease.LeaseHeld(f"store {location(store)} is being written by {lease.describe(held)}: one writer at a "
                              f"time; wait for it, or, if it is gone, its lease lapses {lease.STALE:.0f} s after its "
                              "last heartbeat")  # fmt: skip


def _related(store, source, split: str) -> bool:
    """Whether STORE is SOURCE, a folder above it, or inside the folder the sources are read from."""
    if type(store) is not type(source):
        return False
    return store == source or source.is_relative_to(store) or store.is_relative_to(source / split)


def check_safe(store, cfg, overwrite: bool = False, owner: str | None = None) -> None:
    """StoreError, writing nothing, if a run of `cfg` must not touch `store` whatever its settings: `store` is a
    file, the source, a folder above it or inside the split it reads, or a folder that is not this project's
    store (with overwrite: or that holds anything beside the store)."""
    store, source = location(store).resolve(), location(cfg.source).resolve()
    if _related(store, source, cfg.split):
        raise StoreError(f"{store} is the source, a folder above it or inside its {cfg.split}/: choose another STORE")
    if store.is_file():
        raise StoreError(f"{store} is a file, not a folder: choose another STORE")
    if staging_dir(store).is_symlink():  # writes and deletes would land there
        raise StoreError(f"{staging_dir(store)} is a link, where the store's staging folder belongs; remove it")
    if not store.is_dir() or not any(True for _ in store.iterdir()):
        return
    if not _is_own(store):
        raise StoreError(f"{store} exists and is not a store of this project; choose an empty or new folder")
    check_not_busy(store, owner)
    if overwrite:
        refuse_foreign(store, foreign_entries(store), "--overwrite")


def check_target(store, cfg, overwrite: bool = False, owner: str | None = None) -> StoreState:
    """What a run of the resolved settings `cfg` would do with `store`, or StoreError naming why it must not
    touch it (`check_safe`, or a store of other settings without overwrite); writes nothing. owner: the id of
    the lease this run holds (its own lease is no other writer)."""
    check_safe(store, cfg, overwrite, owner)
    store = location(store)
    if overwrite or not store.is_dir():
        return StoreState.NEW
    digest = config_digest(cfg)
    meta, stamp = store / "zarr.json", staging_dir(store) / "config.json"
    attrs = _mapping(meta, "delete the store or choose another folder").get("attributes", {})
    if isinstance(attrs, dict) and attrs.get("complete") and attrs.get("config_digest") == digest:
        return StoreState.DONE
    if _mapping(stamp, f"delete {staging_dir(store)} to restage").get("digest") == digest:
        return StoreState.RESUME
    if not stamp.is_file() and not meta.is_file():  # killed while it began: nothing to keep
        return StoreState.NEW
    raise StoreError(f"{store} holds a store built with other settings; pass overwrite to rebuild it")


def begin(store, cfg, overwrite: bool = False, owner: str | None = None) -> StoreState:
    """Prepare `store` for a run of `cfg` (`check_target` decides), the caller holding its lease (`lease_of`); a
    store replaced by overwrite loses its own files only, and one that holds anything else is refused."""
    import zarr

    store = location(store)
    state = check_target(store, cfg, overwrite, owner)
    if state is not StoreState.NEW:
        return state
    remove_own(store, keep=(LEASE_KEY,))
    staging_dir(store).mkdir(parents=True, exist_ok=True)
    stamp = staging_dir(store) / "config.json"
    build = {"digest": config_digest(cfg), "build_id": uuid.uuid4().hex, "config": cfg.record()}
    atomic_write(stamp, json.dumps(build, indent=1).encode())
    # the group made with its attributes in one write of zarr.json (`attrs.update` writes it once per key, and a
    # reader in between would see half of them)
    attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}
    zarr.open_group(zarr_root(store), mode="a", zarr_format=3, attributes=attrs)
    return state


def outcome_counts(records: list[dict]) -> dict[str, int]:
    """Sources per outcome: `stored` and `skipped_<kind>`, as the `counts` attribute holds them."""
    outcomes: dict[str, int] = {}
    for r in records:
        key = "stored" if r["outcome"] == "stored" else f"skipped_{r['kind']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


def finalize(store, cfg, records: list[dict], counts: np.ndarray, class_list: list[str]) -> dict:
    """Write the slots, paths, prior, weights, the manifest and the attributes (last, with complete = true); then
    remove the staging area."""
    import zarr

    from pipeline.priors import balance_weights, prior_from_counts

    store = location(store)
    group = zarr.open_group(zarr_root(store), mode="r+")
    stored = [r for r in records if r["outcome"] == "stored"]
    slots = np.array([r["slot"] for r in stored], dtype=np.int64)
    chunk = (max(1, min(len(stored), 65536)),)
    remove_own(store, below=("slots", "path", "prior", "weights"))  # a killed finalize's: their own files only
    group.create_array("slots", shape=slots.shape, dtype=np.int64, chunks=chunk)
    group.create_array("path", shape=slots.shape, dtype=str, chunks=chunk)
    if len(stored):
        group["slots"][:] = slots
        group["path"][:] = np.array([r["path"] for r in stored], dtype=object)
    total = int(counts.sum())
    prior = prior_from_counts(counts) if total else np.full(counts.shape, 1.0 / len(counts))
    weights = balance_weights(prior, cfg.lam)
    for name, arr in (("prior", prior.astype(np.float64)), ("weights", weights)):
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)
        group[name][:] = arr
    manifest = [(json.dumps(r) + "\n").encode() for r in records]
    atomic_write(store / MANIFEST, manifest, tmp_dir=staging_dir(store))
    stamp = _mapping(staging_dir(store) / "config.json", f"delete {staging_dir(store)} to restage")
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "S": cfg.size,
        "lambda": cfg.lam,
        "n_images": len(stored),
        "n_slots": int(group["label"].shape[0]),
        "n_sources": len(records),
        "counts": outcome_counts(records),
        "decoded_by_pil": sum(1 for r in records if r.get("decoder") == "pil"),
        "bin_pixels": total,
        "classes": class_list,
        "config": cfg.record(),
        "config_digest": config_digest(cfg),
        "build_id": str(stamp.get("build_id") or uuid.uuid4().hex),  # this build's, as caches of it know it
        "complete": True,
    }
    group.update_attributes(attrs)  # one write, `complete: true` with everything else
    left = remove_own(store, below=(STAGING,), keep=(LEASE_KEY,), strict=False)
    if left:
        log.warning("%s: left %s in the staging area, which is not the store's own", store, ", ".join(left[:3]))
    return attrs
