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

one image per chunk, `shard_images` images per shard. A run stages its parts (`pipeline.staging`), writes the
shards from them (`pipeline.shards`), and writes the attributes last, with `complete: true`.
"""

import enum
import hashlib
import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.files import atomic_write

FORMAT = "colorize-store"
FORMAT_VERSION = 3  # 3: L coded by `colorize.med_rans`; 2: a crc32c on every chunk (2, 1: still readable)
READABLE_VERSIONS = (1, 2, 3)
STAGING = "_staging"
ARRAY_NDIM = {"L": 3, "bins": 3, "bins_full": 3, "label": 1}  # the per-image arrays, by number of dimensions
MANIFEST = "sources.jsonl"
# zarr warns on every open that numcodecs codecs (the Delta filter of L in format versions 1 and 2, still
# readable) are not in the v3 spec; they are registered with zarr and any zarr-python 3 reads them.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")


class StoreError(RuntimeError):
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


def begin(store: Path, cfg, overwrite: bool = False) -> StoreState:
    """Prepare `store` for a run of `cfg`; refuse a store of other settings (or not a store) unless overwrite."""
    store = Path(store)
    digest = config_digest(cfg)
    meta = store / "zarr.json"
    if meta.is_file():
        attrs = json.loads(meta.read_text()).get("attributes", {})
        if attrs.get("complete") and attrs.get("config_digest") == digest and not overwrite:
            return StoreState.DONE
    stamp = staging_dir(store) / "config.json"
    if not overwrite and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        return StoreState.RESUME
    if store.exists() and any(store.iterdir()):
        if not overwrite and not stamp.is_file() and not meta.is_file():
            raise StoreError(f"{store} exists and is not a store of this project; choose an empty path")
        if not overwrite:
            raise StoreError(f"{store} holds a store built with other settings; pass overwrite to rebuild it")
        shutil.rmtree(store)
    import zarr

    staging_dir(store).mkdir(parents=True, exist_ok=True)
    atomic_write(stamp, json.dumps({"digest": digest, "config": asdict(cfg)}, indent=1).encode())
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
