"""Stage 3, staging: one part of the source list -> staged L, bins, labels and a 313-bin histogram.

This is the work of one task (`pipeline.build.stage_part`): read the files, probe them, decode, resize
and crop in DALI (`pipeline.decode`), compute the targets in one Numba pass (`kernels.image_targets`),
count categories for the prior (Eq. 9), encode each image's chunks as the store holds them (`pipeline.store.chunks`)
and stage them (`pipeline.store.staging.save_part`). Every source ends as one record: stored, or skipped with a
`kind` and a human-readable `reason`.
"""

import os
import time
from pathlib import Path

import numpy as np

from kernels.gamut import Q
from pipeline.config import PreprocessConfig
from pipeline.decode import cropper, probe
from pipeline.discover import Source, read_source

DALI_BATCH = 64  # images per DALI run: the decoded full-size images of one batch are held at once
GRAY_CHROMA = 2.0  # mean chroma of the 4x4 block means below which a colour-mode photo counts as grayscale


def cut_parts(sources: list[Source], part_images: int) -> list[list[Source]]:
    """The source list cut into consecutive parts of part_images files (the last may be shorter)."""
    return [sources[i : i + part_images] for i in range(0, len(sources), part_images)]


def part_cropper(cfg: PreprocessConfig, device: str):
    """The (per-thread cached) DALI cropper a part is decoded with: batches of at most DALI_BATCH images."""
    return cropper(cfg.size, min(cfg.part_images or DALI_BATCH, DALI_BATCH), device)


def _read(root: Path, src: Source) -> tuple[bytes | None, str]:
    try:
        return read_source(root, src), ""
    except OSError as e:
        return None, f"unreadable file: {type(e).__name__}: {e.strerror or e}"


def _skip(src: Source, kind: str, reason: str) -> dict:
    rec = {"path": src.path, "wnid": src.wnid, "label": src.label, "outcome": "skipped"}
    return rec | {"kind": kind, "reason": reason}


def process_part(cfg: PreprocessConfig, store: str, part: int, sources: list[Source], device: str) -> dict:
    """Decode and encode one part, stage it, and return its summary (records and category counts).

    The part is worked through in batches of DALI_BATCH files, each encoded to its chunks' bytes before the
    next is read, so that a worker holds one batch of pixels whatever the part size.
    """
    from pipeline.store.staging import save_part

    t0 = time.perf_counter()
    records: list[dict | None] = [None] * len(sources)
    names = ["L", "bins", "label"] + (["bins_full"] if cfg.full_bins else [])
    encoded: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in names}
    counts = np.zeros(Q, dtype=np.int64)
    cropper = part_cropper(cfg, device)
    for lo in range(0, len(sources), DALI_BATCH):
        batch = range(lo, min(len(sources), lo + DALI_BATCH))
        for name, chunks in _process_batch(cfg, sources, batch, cropper, records, counts).items():
            encoded[name].append(chunks)
    chunks = {name: tuple(np.concatenate([c[k] for c in parts]) for k in (0, 1)) for name, parts in encoded.items()}
    save_part(Path(store), part, chunks, counts, records)
    stored = len(chunks["label"][1])
    summary = {"part": part, "stored": stored, "counts": counts, "records": records, "pid": os.getpid()}
    return summary | {"seconds": time.perf_counter() - t0}


def _process_batch(cfg: PreprocessConfig, sources, batch: range, cropper, records: list, counts: np.ndarray) -> dict:
    """The files `batch` of sources: fill their records, add their bins to counts; the encoded chunks of those kept."""
    from kernels import encode_bins, image_targets
    from pipeline.store.chunks import array_codecs, encode_images

    root = Path(cfg.source)
    blobs, todo = [], []
    for i in batch:
        src = sources[i]
        data, err = _read(root, src)
        if data is None:
            records[i] = _skip(src, "unreadable", err)
            continue
        info = probe(data, cfg.max_pixels)
        if info.reason:
            records[i] = _skip(src, info.kind, info.reason)
        elif info.grayscale and cfg.grayscale == "exclude":
            records[i] = _skip(src, "grayscale", f"grayscale image (mode {info.mode}), excluded as Zhang et al. did")
        else:
            blobs.append(data)
            todo.append(i)
    crops = cropper.crops(blobs) if blobs else []
    kept, rgbs = [], []
    for i, (rgb, decoder, err) in zip(todo, crops, strict=True):
        src = sources[i]
        if rgb is None:
            records[i] = _skip(src, "decode_failed", f"could not decode: {err}")
            continue
        if rgb.shape != (cfg.size, cfg.size, 3):
            records[i] = _skip(src, "decode_failed", f"decoder returned shape {rgb.shape}")
            continue
        rec = {"path": src.path, "wnid": src.wnid, "label": src.label, "outcome": "stored", "decoder": decoder}
        if err:
            rec["note"] = err
        records[i] = rec
        kept.append(i)
        rgbs.append(rgb)
    size, h = cfg.size, cfg.size // 4
    if rgbs:
        rgb = np.stack(rgbs)  # (B, S, S, 3)
        L, bins, chroma = image_targets(rgb)
    else:
        rgb = np.zeros((0, size, size, 3), np.uint8)
        L, bins, chroma = np.zeros((0, size, size), np.uint8), np.zeros((0, h, h), np.int16), np.zeros(0)
    keep = np.ones(len(kept), dtype=bool)
    if cfg.grayscale == "exclude":
        for k, i in enumerate(kept):
            if chroma[k] < GRAY_CHROMA:
                keep[k] = False
                records[i] = _skip(
                    sources[i], "grayscale", f"grayscale content (mean chroma {chroma[k]:.2f} < {GRAY_CHROMA})"
                )
    labels = np.array([sources[i].label for i in kept], dtype=np.int16)[keep]
    arrays = {"L": L[keep], "bins": bins[keep], "label": labels}
    if cfg.full_bins:
        arrays["bins_full"] = encode_bins(rgb[keep]) if keep.any() else np.zeros((0, size, size), np.int16)
    counts += np.bincount(arrays["bins"].ravel(), minlength=Q)
    return {
        name: encode_images(array_codecs(name, a.dtype, cfg.zstd_level, cfg.l_codec), a) for name, a in arrays.items()
    }
