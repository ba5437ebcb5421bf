"""Stage 4: the Zarr v3 store of one split -- staging, one writer per shard, and the final attributes.

Layout (docs/store.md is the reference): a Zarr v3 group per split with

    L        uint8  [N, S, S]      round(L * 255 / 100) of the S x S crop
    bins     int16  [N, S/4, S/4]  category (Eq. 7-8) of each 4 x 4 block's mean (a, b)
    bins_full int16 [N, S, S]      category of every pixel (only with --full-bins)
    label    int16  [N]            class index, -1 = unknown
    path     str    [N]            source path, relative to the source root
    prior    float64 [313]         empirical prior of `bins` (Eq. 9)
    weights  float32 [313]         balance weights (Eq. 10), sum(prior * weights) = 1
    sources.jsonl                  every source file: stored (with its index) or skipped (with its reason)

one image per chunk, `shard_images` images per shard, zstd-compressed. Images are in source order.

A run first stages each part (a slice of the source list, one Prefect task) into `_staging/part-*.chunks`
(every image's chunks already encoded, `pipeline.chunks`) and `_staging/part-*.pkl` (its summary), each
atomically. Each Zarr shard is then written, whole, by the flow's process alone as soon as the parts under it
are staged (concurrent partial writes of a shard lose data, zarr-python issue 3682), and a part's chunks are
deleted once all its shards are; N is known once every part is staged, and the attributes, with
`complete: true`, are written last. A killed run re-uses what was staged and
rewrites any shard not marked done, so it resumes to the same bytes as an uninterrupted run.
"""

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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


def config_digest(cfg) -> str:
    """A digest of every setting that changes the store's content."""
    settings = asdict(cfg) | {"format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data, sync: bool = True, tmp_dir: Path | None = None) -> None:
    """Write to a temp name, then rename: a reader or a resumed run sees the whole file or none of it.

    data: a bytes-like object, or a list of them written one after the other (not joined in memory first).
    sync: fsync before the rename (staged parts, which are costly to redo; shards are re-written from them).
    tmp_dir: where the temp file goes (same file system), e.g. the staging area, which `finalize` removes, so
    that a write cut short by a kill leaves nothing among the store's arrays.
    """
    tmp = (tmp_dir or path.parent) / f".{path.name}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        for piece in data if isinstance(data, list) else (data,):
            f.write(piece)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def staging_dir(store: Path) -> Path:
    return Path(store) / STAGING


def begin(store: Path, cfg, overwrite: bool = False) -> str:
    """Prepare `store` for a run of `cfg`: 'done' if already complete, else 'new' or 'resume'."""
    store = Path(store)
    digest = config_digest(cfg)
    meta = store / "zarr.json"
    if meta.is_file():
        attrs = json.loads(meta.read_text()).get("attributes", {})
        if attrs.get("complete") and attrs.get("config_digest") == digest and not overwrite:
            return "done"
    stamp = staging_dir(store) / "config.json"
    if not overwrite and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        return "resume"
    if store.exists() and any(store.iterdir()):
        if not overwrite and not stamp.is_file() and not meta.is_file():
            raise StoreError(f"{store} exists and is not a store of this project; choose an empty path")
        if not overwrite:
            raise StoreError(f"{store} holds a store built with other settings; pass overwrite to rebuild it")
        shutil.rmtree(store)
    import zarr

    staging_dir(store).mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(stamp, json.dumps({"digest": digest, "config": asdict(cfg)}, indent=1).encode())
    zarr.open_group(store, mode="a", zarr_format=3).attrs.update(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}
    )
    return "new"


def part_path(store: Path, part: int) -> Path:
    """A staged part's summary: its records, category counts and chunk sizes; its presence marks the part done."""
    return staging_dir(store) / f"part-{part:06d}.pkl"


def part_chunks_path(store: Path, part: int) -> Path:
    """A staged part's encoded chunks, one blob per array; deleted once every shard over the part is written."""
    return staging_dir(store) / f"part-{part:06d}.chunks"


def save_part(store: Path, part: int, chunks: dict, counts: np.ndarray, records: list[dict]) -> None:
    """Stage one part atomically: the encoded chunks of its images (`pipeline.chunks.encode_images`: a blob and
    the chunk sizes per array) in one file, then its summary (category histogram, the records of all its
    sources, the chunk sizes) in another, a pickle read back only by this project's own flow.

    Two files, so that the chunks can go as soon as their shards are written while a resumed run still reads
    every part's summary: staging does not hold a second copy of the store until the end, and on the Zen 3 VM
    of 2026-12-03, where writing into page-cache pages just freed cost half the CPU of writing into fresh ones
    (7 against 15 ms per MB), the flow went from 1.80x to 1.59x the floor (no difference on the Xeon of
    2026-12-04). The chunks are written and synced first: a summary on disk means its chunks were there.
    """
    import pickle

    names = list(chunks)
    blobs = [memoryview(np.ascontiguousarray(chunks[name][0])).cast("B") for name in names]
    _atomic_write_bytes(part_chunks_path(store, part), blobs)
    sizes = {name: np.asarray(chunks[name][1], dtype=np.int64) for name in names}
    staged = {"names": names, "sizes": sizes, "counts": counts, "records": records}
    _atomic_write_bytes(part_path(store, part), pickle.dumps(staged, protocol=5))


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
    import pickle

    staged = pickle.loads(part_path(store, part).read_bytes())
    offsets = {name: np.concatenate([[0], np.cumsum(staged["sizes"][name])]) for name in staged["names"]}
    part_ = StagedPart(offsets, staged["counts"], staged["records"])
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


def part_done(store: Path, part: int) -> bool:
    return part_path(store, part).is_file()


def free_part_chunks(store: Path, part: int, first: int, count: int, shard_images: int) -> bool:
    """Delete part's staged chunks if every shard over its images (first ... first + count) is written."""
    shards = range(first // shard_images, -(-(first + count) // shard_images))
    if all(shard_marker(store, k).is_file() for k in shards):
        part_chunks_path(store, part).unlink(missing_ok=True)
        return True
    return False


def create_arrays(store: Path, n: int, size: int, full_bins: bool, shard_images: int, level: int) -> None:
    """Create the per-image arrays for up to n images (`resize_arrays` sets the final N).

    Arrays left by a killed run with the same layout are kept (grown back to n if they were shrunk), so
    their finished shards stay valid; an array created anew invalidates every shard-done marker. The codecs are
    `pipeline.chunks.array_codecs`: the shard files are written from bytes encoded with the same chain.
    """
    import zarr

    from pipeline.chunks import array_codecs

    group = zarr.open_group(store, mode="a", zarr_format=3)
    h = size // 4
    specs = {
        "L": ((size, size), np.uint8),
        "bins": ((h, h), np.int16),
        "label": ((), np.int16),
    }
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
            **array_codecs(name, dtype, level).zarr_codecs(),
        )


def resize_arrays(store: Path, n: int) -> None:
    """Shrink the per-image arrays to the n images stored (shards past n are deleted by zarr)."""
    import zarr

    group = zarr.open_group(store, mode="r+")
    for name in ARRAY_NDIM:
        if name in group and group[name].shape[0] != n:
            group[name].resize((n, *group[name].shape[1:]))


def shard_marker(store: Path, shard: int) -> Path:
    return staging_dir(store) / f"shard-{shard:06d}.done"


def shard_key(name: str, shard: int) -> str:
    """The shard file of image array `name` holding images shard * shard_images ... (zarr's default chunk keys)."""
    return "/".join([name, "c", str(shard)] + ["0"] * (ARRAY_NDIM[name] - 1))


def write_shard(
    store: Path, shard: int, shard_images: int, layout: list[tuple[int, int, int]], parts: dict | None = None
) -> int:
    """Write Zarr shard `shard` of every image array from the staged parts; returns its image count.

    layout: (part, first global index, image count) of the staged prefix of the parts, in order; the shard
    ends at the end of that prefix at the latest. parts: staged parts already loaded, by number (filled here);
    a caller writing shards in order passes one dict, so that no part is read twice. The shard's chunks are
    copied as staged, already encoded, and the file is written whole under a temp name, then renamed.
    """
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
    from pipeline.chunks import shard_file

    for name in pieces[0][0].names if pieces else ():
        chunks = [p.chunk(name, i) for p, a, b in pieces for i in range(a, b)]
        path = Path(store) / shard_key(name, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, shard_file(chunks, shard_images), sync=False, tmp_dir=staging_dir(store))
    _atomic_write_bytes(shard_marker(store, shard), b"", sync=False)
    for part, first, count in under:  # parts ending in this shard: freed once all their shards are written
        if first + count <= hi and free_part_chunks(store, part, first, count, shard_images):
            parts.pop(part)
    return hi - lo


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
    manifest = "".join(json.dumps(r) + "\n" for r in records).encode()
    _atomic_write_bytes(Path(store) / MANIFEST, manifest, tmp_dir=staging_dir(store))
    outcomes = outcome_counts(records)
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "size": cfg.size,
        "S": cfg.size,
        "lambda": cfg.lam,
        "n_images": len(paths),
        "n_sources": len(records),
        "counts": outcomes,
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
