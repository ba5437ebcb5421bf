"""The store's format: what a finished store is, how a run begins and ends, and how a reader opens one.

Layout (docs/store.md is the reference): a Zarr v3 group per split with

    L        uint8  [N, S, S]      round(L * 255 / 100) of the S x S crop
    bins     int16  [N, S/4, S/4]  category (Eq. 7-8) of each 4 x 4 block's mean (a, b)
    bins_full int16 [N, S, S]      category of every pixel (only with --full-bins)
    label    int16  [N]            class index, -1 = unknown
    path     str    [N]            source path, relative to the source root
    prior    float64 [313]         empirical prior of `bins` (Eq. 9)
    weights  float32 [313]         balance weights (Eq. 10), sum(prior * weights) = 1
    sources.jsonl                  every source file: stored (with its index) or skipped (with its reason)

one image per chunk, `shard_images` images per shard. A run stages its parts (`pipeline.store.staging`), writes the
shards from them (`pipeline.store.shards`), and writes the attributes last, with `complete: true`.
"""

import enum
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.common.cli import Refused
from pipeline.common.files import atomic_write

FORMAT = "colorize-store"
FORMAT_VERSION = 3  # 3: L coded by `colorize.med_rans`; 2: L by delta + zstd, a crc32c on every chunk
READABLE_VERSIONS = (2, 3)  # this one and the one before
STAGING = "_staging"
ARRAY_NDIM = {"L": 3, "bins": 3, "bins_full": 3, "label": 1}  # the per-image arrays, by number of dimensions
MANIFEST = "sources.jsonl"
# Everything a store folder may hold: the group, its arrays, the manifest and a run's staging area.
STORE_ENTRIES = frozenset({"zarr.json", MANIFEST, STAGING, *ARRAY_NDIM, "path", "prior", "weights"})


class StoreError(Refused, RuntimeError):
    """A store that cannot be used: missing, incomplete, built with other settings, or damaged."""


class StoreState(enum.Enum):
    """What `begin` found: nothing to resume, a killed run's staging to resume, or a finished store."""

    NEW = "new"
    RESUME = "resume"
    DONE = "done"


def config_digest(cfg) -> str:
    """A digest of every setting that changes the store's content."""
    settings = asdict(cfg) | {"format_version": FORMAT_VERSION}
    if settings.get("l_codec") == "med_rans":  # added later: stores built before it keep their digest
        del settings["l_codec"]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def staging_dir(store: Path) -> Path:
    return Path(store) / STAGING


def shard_key(name: str, shard: int) -> str:
    """The shard file of image array `name` holding images shard * shard_images ... (zarr's default chunk keys)."""
    return "/".join([name, "c", str(shard)] + ["0"] * (ARRAY_NDIM[name] - 1))


def _is_own(store: Path) -> bool:
    """Whether a folder is recognisably this project's store: its group says so, or a run's staging does, or it
    holds nothing but the staging area of a run killed while it began (empty, or the stamp's temp file)."""
    meta, stamp = store / "zarr.json", staging_dir(store) / "config.json"
    if [p.name for p in store.iterdir()] == [STAGING] and staging_dir(store).is_dir():
        if all(p.name.startswith(".config.json.tmp") for p in staging_dir(store).iterdir()):
            return True
    try:
        if meta.is_file() and json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT:
            return True
        return stamp.is_file() and "digest" in json.loads(stamp.read_text())
    except (OSError, ValueError, AttributeError):
        return False


def foreign_entries(store: Path) -> list[str]:
    """What a store folder holds beyond a store's own files: the names `--overwrite` would have to delete."""
    foreign = [p.name for p in sorted(store.iterdir()) if p.name not in STORE_ENTRIES]
    for name in STORE_ENTRIES - {"zarr.json", MANIFEST, STAGING}:
        folder = store / name
        if folder.is_dir():
            foreign += [f"{name}/{p.name}" for p in sorted(folder.iterdir()) if p.name not in ("zarr.json", "c")]
        elif folder.exists():
            foreign.append(name)
    return foreign


def check_safe(store: Path, cfg, overwrite: bool = False) -> None:
    """StoreError, writing nothing, if a run of `cfg` must not touch `store` whatever its settings: `store` is a
    file, the source, a folder above it or inside the split it reads, or a folder that is not this project's
    store (with overwrite: or that holds anything beside the store)."""
    store, source = Path(store).resolve(), Path(cfg.source).resolve()
    if store == source or source.is_relative_to(store) or store.is_relative_to(source / cfg.split):
        raise StoreError(f"{store} is the source, a folder above it or inside its {cfg.split}/: choose another STORE")
    if store.exists() and not store.is_dir():
        raise StoreError(f"{store} is a file, not a folder: choose another STORE")
    if not store.exists() or not any(store.iterdir()):
        return
    if not _is_own(store):
        raise StoreError(f"{store} exists and is not a store of this project; choose an empty or new folder")
    foreign = foreign_entries(store) if overwrite else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise StoreError(f"{store} holds files that are not the store's ({shown}); overwrite replaces a store only")


def check_target(store: Path, cfg, overwrite: bool = False) -> StoreState:
    """What a run of the resolved settings `cfg` would do with `store`, or StoreError naming why it must not
    touch it (`check_safe`, or a store of other settings without overwrite); writes nothing."""
    check_safe(store, cfg, overwrite)
    store = Path(store)
    if overwrite or not store.exists() or not any(store.iterdir()):
        return StoreState.NEW
    digest = config_digest(cfg)
    meta, stamp = store / "zarr.json", staging_dir(store) / "config.json"
    attrs = json.loads(meta.read_text()).get("attributes", {}) if meta.is_file() else {}
    if attrs.get("complete") and attrs.get("config_digest") == digest:
        return StoreState.DONE
    if stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        return StoreState.RESUME
    if not stamp.is_file() and not meta.is_file():  # killed while it began: nothing to keep
        return StoreState.NEW
    raise StoreError(f"{store} holds a store built with other settings; pass overwrite to rebuild it")


def begin(store: Path, cfg, overwrite: bool = False) -> StoreState:
    """Prepare `store` for a run of `cfg` (`check_target` decides); a store replaced by overwrite is removed
    entry by entry, its own entries only."""
    store = Path(store)
    state = check_target(store, cfg, overwrite)
    if state is not StoreState.NEW:
        return state
    if store.is_dir():
        for name in STORE_ENTRIES:
            entry = store / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    import zarr

    staging_dir(store).mkdir(parents=True, exist_ok=True)
    stamp = staging_dir(store) / "config.json"
    atomic_write(stamp, json.dumps({"digest": config_digest(cfg), "config": asdict(cfg)}, indent=1).encode())
    zarr.open_group(store, mode="a", zarr_format=3).attrs.update(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}
    )
    return StoreState.NEW


def outcome_counts(records: list[dict]) -> dict[str, int]:
    """Sources per outcome: `stored` and `skipped_<kind>`, as the `counts` attribute holds them."""
    outcomes: dict[str, int] = {}
    for r in records:
        key = "stored" if r["outcome"] == "stored" else f"skipped_{r['kind']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


def finalize(store: Path, cfg, records: list[dict], counts: np.ndarray, class_list: list[str]) -> dict:
    """Write paths, prior, weights, the manifest and the attributes (last, with complete = true)."""
    import zarr

    from pipeline.priors import balance_weights, prior_from_counts

    group = zarr.open_group(store, mode="r+")
    paths = [r["path"] for r in records if r["outcome"] == "stored"]
    group.create_array("path", shape=(len(paths),), dtype=str, chunks=(max(1, min(len(paths), 65536)),), overwrite=True)
    if paths:
        group["path"][:] = np.array(paths, dtype=object)
    total = int(counts.sum())
    prior = prior_from_counts(counts) if total else np.full(counts.shape, 1.0 / len(counts))
    weights = balance_weights(prior, cfg.lam)
    for name, arr in (("prior", prior.astype(np.float64)), ("weights", weights)):
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape, overwrite=True)
        group[name][:] = arr
    manifest = [(json.dumps(r) + "\n").encode() for r in records]
    atomic_write(Path(store) / MANIFEST, manifest, tmp_dir=staging_dir(store))
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "S": cfg.size,
        "lambda": cfg.lam,
        "n_images": len(paths),
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
    shutil.rmtree(staging_dir(store), ignore_errors=True)
    return attrs


def missing_shards(group, path) -> list[str]:
    """The shard files of the per-image arrays that should exist and do not (a deleted shard reads as zeros)."""
    missing = []
    for name in ARRAY_NDIM:
        if name not in group:
            continue
        arr = group[name]
        step = arr.shards[0] if arr.shards else arr.chunks[0]
        tail = "/".join("0" for _ in arr.shape[1:])
        for k in range(-(-arr.shape[0] // step)):
            rel = f"{name}/c/{k}" + (f"/{tail}" if tail else "")
            if not (Path(path) / rel).is_file():
                missing.append(rel)
    return missing


def open_store(path, mode: str = "r", check_shards: bool = True):
    """The Zarr group of a finished store; StoreError if it is missing, incomplete or of another format."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not a Zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(path, mode=mode)
    except Exception as e:  # noqa: BLE001 - any failure to open is reported the same way
        raise StoreError(f"{path}: cannot open the store: {type(e).__name__}: {e}") from e
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is not a {FORMAT} store")
    if attrs.get("format_version") not in READABLE_VERSIONS:
        raise StoreError(f"{path} has format version {attrs.get('format_version')}, readable: {READABLE_VERSIONS}")
    if not attrs.get("complete"):
        raise StoreError(f"{path} is incomplete (its preprocessing run has not finished)")
    if check_shards:
        gone = missing_shards(group, path)
        if gone:
            raise StoreError(f"{path} is damaged: {len(gone)} shard file(s) missing, e.g. {gone[0]}")
    return group
