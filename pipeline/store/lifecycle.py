"""How a run begins and ends: what it may touch, what it finds (nothing, a killed run to resume, a finished
store), and the metadata it writes last (`finalize`), with `complete: true`.

`--overwrite` replaces only a folder that is this project's store (or a killed run's staging) and holds nothing
else, never SOURCE, a folder above it or a folder the sources are read from; the store's own entries are
deleted one by one, never the folder itself. Works alike on a local folder and an object store prefix.
"""

import enum
import json
from dataclasses import asdict

import numpy as np

from pipeline.common.files import atomic_write, remove_tree
from pipeline.common.storage import ObjectPath, location
from pipeline.store.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    STAGING,
    STORE_ENTRIES,
    StoreError,
    config_digest,
    staging_dir,
    zarr_root,
)
from pipeline.store.staging import load_part


class StoreState(enum.Enum):
    """What `begin` found: nothing to resume, a killed run's staging to resume, or a finished store."""

    NEW = "new"
    RESUME = "resume"
    DONE = "done"


def _is_own(store) -> bool:
    """Whether a folder is recognisably this project's store: its group says so, or a run's staging does, or it
    holds nothing but the staging area of a run killed while it began (empty, or the stamp's temp file)."""
    meta, stamp = store / "zarr.json", staging_dir(store) / "config.json"
    if [p.name for p in store.iterdir()] == [STAGING]:
        if all(p.name.startswith(".config.json.tmp") for p in staging_dir(store).iterdir()):
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
        value = json.loads(path.read_bytes())
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
            if p.name.startswith("part-") and p.name.endswith(".json") and p.name[5:-5].isdigit():
                load_part(store, int(p.name[5:-5]))


def foreign_entries(store) -> list[str]:
    """What a store folder holds beyond a store's own files: the names `--overwrite` would have to delete."""
    store = location(store)
    foreign = [p.name for p in store.iterdir() if p.name not in STORE_ENTRIES]
    for name in sorted(STORE_ENTRIES - {"zarr.json", MANIFEST, STAGING}):
        folder = store / name
        if folder.is_dir():
            foreign += [f"{name}/{p.name}" for p in folder.iterdir() if p.name not in ("zarr.json", "c")]
        elif folder.is_file():
            foreign.append(name)
    return foreign


def _related(store, source, split: str) -> bool:
    """Whether STORE is SOURCE, a folder above it, or inside the folder the sources are read from."""
    if type(store) is not type(source):
        return False
    return store == source or source.is_relative_to(store) or store.is_relative_to(source / split)


def check_safe(store, cfg, overwrite: bool = False) -> None:
    """StoreError, writing nothing, if a run of `cfg` must not touch `store` whatever its settings: `store` is a
    file, the source, a folder above it or inside the split it reads, or a folder that is not this project's
    store (with overwrite: or that holds anything beside the store)."""
    store, source = location(store).resolve(), location(cfg.source).resolve()
    if _related(store, source, cfg.split):
        raise StoreError(f"{store} is the source, a folder above it or inside its {cfg.split}/: choose another STORE")
    if store.is_file():
        raise StoreError(f"{store} is a file, not a folder: choose another STORE")
    if not store.is_dir() or not any(True for _ in store.iterdir()):
        return
    if not _is_own(store):
        raise StoreError(f"{store} exists and is not a store of this project; choose an empty or new folder")
    foreign = foreign_entries(store) if overwrite else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise StoreError(f"{store} holds files that are not the store's ({shown}); overwrite replaces a store only")


def check_target(store, cfg, overwrite: bool = False) -> StoreState:
    """What a run of the resolved settings `cfg` would do with `store`, or StoreError naming why it must not
    touch it (`check_safe`, or a store of other settings without overwrite); writes nothing."""
    check_safe(store, cfg, overwrite)
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


def begin(store, cfg, overwrite: bool = False) -> StoreState:
    """Prepare `store` for a run of `cfg` (`check_target` decides); a store replaced by overwrite is removed
    entry by entry, its own entries only."""
    import zarr

    store = location(store)
    state = check_target(store, cfg, overwrite)
    if state is not StoreState.NEW:
        return state
    for name in STORE_ENTRIES:
        entry = store / name
        if entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            remove_tree(entry)
    staging_dir(store).mkdir(parents=True, exist_ok=True)
    stamp = staging_dir(store) / "config.json"
    atomic_write(stamp, json.dumps({"digest": config_digest(cfg), "config": asdict(cfg)}, indent=1).encode())
    zarr.open_group(zarr_root(store), mode="a", zarr_format=3).attrs.update(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}
    )
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
    group.create_array("slots", shape=slots.shape, dtype=np.int64, chunks=chunk, overwrite=True)
    group.create_array("path", shape=slots.shape, dtype=str, chunks=chunk, overwrite=True)
    if len(stored):
        group["slots"][:] = slots
        group["path"][:] = np.array([r["path"] for r in stored], dtype=object)
    total = int(counts.sum())
    prior = prior_from_counts(counts) if total else np.full(counts.shape, 1.0 / len(counts))
    weights = balance_weights(prior, cfg.lam)
    for name, arr in (("prior", prior.astype(np.float64)), ("weights", weights)):
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape, overwrite=True)
        group[name][:] = arr
    manifest = [(json.dumps(r) + "\n").encode() for r in records]
    local_tmp = None if isinstance(store, ObjectPath) else staging_dir(store)
    atomic_write(store / MANIFEST, manifest, tmp_dir=local_tmp)
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
        "config": asdict(cfg),
        "config_digest": config_digest(cfg),
        "complete": True,
    }
    group.attrs.update(attrs)
    remove_tree(staging_dir(store))
    return attrs
