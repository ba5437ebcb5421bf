"""Stage 3, staging: one part of the source list -> its shards in the store, its records and a 313-bin histogram.

This is the work of one task (`pipeline.build.stage_part`): read the files, probe them, decode, resize and crop in
DALI (`pipeline.decode`), compute the targets in one Numba pass (`kernels.image_targets`), count categories for
the prior (Eq. 9), encode each image's chunks as the store holds them (`pipeline.store.arrays`), and write the
part's shards straight into the store (`pipeline.store.shards`), local or remote. The part owns the slots
`first_slot ...` of its sources, whole shards of them; a skipped source leaves its slot empty. Every source
ends as one record: stored (with its slot), or skipped with a `kind` and a human-readable `reason`. The summary
is staged last (`pipeline.store.staging.save_part`): it marks the part done.
"""

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kernels.gamut import Q
from pipeline.config import PreprocessConfig
from pipeline.decode import cropper, probe
from pipeline.discover import Source, read_sources
from pipeline.storage import location

DALI_BATCH = 64  # images per DALI run: the decoded full-size images of one batch are held at once
GRAY_CHROMA = 2.0  # mean chroma of the 4x4 block means below which a colour-mode photo counts as grayscale
REMOTE_READS = 16  # sources of a remote batch fetched at once: object stores answer in tens of ms each
REMOTE_WRITES = 4  # shards of a batch uploaded at once, while the next batch decodes


@dataclass(frozen=True)
class Part:
    """A part of the source list: its sources, and the slot of its first one (the first of a whole store shard)."""

    first_slot: int
    sources: list[Source]


def cut_parts(sources: list[Source], part_images: int, shard_images: int) -> list[Part]:
    """The source list cut into consecutive parts of part_images sources (a multiple of shard_images), except that
    the members of a gzip'd shard make a part of their own, whatever its size: gzip has no random access, so a
    part reads its shard's stream once, from the start. Each part's first slot begins a whole store shard, so no
    store shard has two writers (the slots between two parts stay empty). Depends on the sources alone, so that
    a resumed run cuts the same parts."""
    parts, slot, k = [], 0, 0
    while k < len(sources):
        stream, j = gz_shard(sources[k]), k + 1
        if stream is not None:
            while j < len(sources) and gz_shard(sources[j]) == stream:
                j += 1
        else:
            while j < len(sources) and j - k < part_images and gz_shard(sources[j]) is None:
                j += 1
        parts.append(Part(slot, sources[k:j]))
        slot = -(-(slot + j - k) // shard_images) * shard_images
        k = j
    return parts


def gz_shard(src: Source) -> str | None:
    """The gzip'd shard a source is a member of, or None."""
    from pipeline.gztars import is_gz, split_member

    found = split_member(src.path) if src.offset >= 0 else None
    return found[0] if found is not None and is_gz(found[0]) else None


def slot_count(parts: list[Part]) -> int:
    """The slots of the store the parts fill: up to the last part's last source."""
    return parts[-1].first_slot + len(parts[-1].sources) if parts else 0


def batch_size(shard_images: int) -> int:
    """Sources decoded per DALI run: at least DALI_BATCH, whole shards (so that a batch writes its shards)."""
    return shard_images * -(-DALI_BATCH // shard_images)


def part_cropper(cfg: PreprocessConfig, device: str):
    """The (per-thread cached) DALI cropper a part is decoded with."""
    return cropper(cfg.size, min(cfg.part_images or DALI_BATCH, batch_size(cfg.shard_images)), device)


def _pool(threads: int) -> ThreadPoolExecutor | None:
    """Threads for reads or writes worth overlapping (a bucket's); none where one at a time is as fast (a disk)."""
    return ThreadPoolExecutor(threads) if threads > 1 else None


def _skip(src: Source, kind: str, reason: str) -> dict:
    rec = {"path": src.path, "wnid": src.wnid, "label": src.label, "outcome": "skipped"}
    return rec | {"kind": kind, "reason": reason}


def process_part(cfg: PreprocessConfig, store: str, part: int, sources: list[Source], device: str,
                 first_slot: int) -> dict:  # fmt: skip
    """Decode and encode one part, write its shards, stage its summary, and return the summary.

    The part is worked through in batches of whole shards, each written before the next is decoded, so that a
    worker holds one batch of pixels whatever the part size; a remote batch is fetched while the one before
    decodes, and into a remote store a batch's shards upload while the next one decodes. The summary is staged
    only once every shard is written: it marks the part done.
    """
    from pipeline.store.shards import slot_shards, write_shard
    from pipeline.store.staging import save_part

    t0 = time.perf_counter()
    records: list[dict | None] = [None] * len(sources)
    counts = np.zeros(Q, dtype=np.int64)
    crop = part_cropper(cfg, device)
    root, step, per = location(cfg.source), batch_size(cfg.shard_images), cfg.shard_images
    batches = [range(lo, min(len(sources), lo + step)) for lo in range(0, len(sources), step)]
    reads = _pool(root.parallel(REMOTE_READS))  # a batch's objects, fetched at once from a bucket
    uploads = _pool(location(store).parallel(REMOTE_WRITES))
    written: list = []  # the uploads of the batch before, waited for before the next batch's start
    with ThreadPoolExecutor(1) as pool, reads or contextlib.nullcontext(), uploads or contextlib.nullcontext():
        fetch = lambda b: pool.submit(read_sources, root, [sources[i] for i in b], reads)  # noqa: E731
        ahead = fetch(batches[0]) if batches else None
        for k, batch in enumerate(batches):
            got, ahead = ahead.result(), (fetch(batches[k + 1]) if k + 1 < len(batches) else None)
            chunks = _process_batch(cfg, sources, batch, got, crop, records, counts)
            for future in written:
                future.result()
            written = []
            for shard in slot_shards(first_slot + batch.start, len(batch), per):
                lo = shard * per - first_slot  # the shard's first slot, as a position in the part
                positions = range(lo, min(lo + per, len(sources)))
                args = (store, shard, per, {name: [c.get(i) for i in positions] for name, c in chunks.items()})
                if uploads:
                    written.append(uploads.submit(write_shard, *args))
                else:
                    write_shard(*args)
        for future in written:
            future.result()
    for i, rec in enumerate(records):
        if rec["outcome"] == "stored":
            rec["slot"] = first_slot + i
    save_part(store, part, counts, records)
    stored = sum(r["outcome"] == "stored" for r in records)
    summary = {"part": part, "stored": stored, "counts": counts, "records": records, "pid": os.getpid()}
    return summary | {"seconds": time.perf_counter() - t0}


def _process_batch(cfg: PreprocessConfig, sources, batch: range, got: list, crop, records: list,
                   counts: np.ndarray) -> dict[str, dict[int, bytes]]:  # fmt: skip
    """The files `batch` of sources, read as `got` ((bytes or None, error) each): fill their records, add their bins
    to counts; the encoded chunk of each kept one, by array and position."""
    from kernels import image_targets
    from pipeline.store.arrays import array_codecs

    blobs, todo = [], []
    for i, (data, err) in zip(batch, got, strict=True):
        src = sources[i]
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
    crops = crop.crops(blobs) if blobs else []
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
    if not rgbs:
        return {name: {} for name in _names(cfg)}
    rgb = np.stack(rgbs)  # (B, S, S, 3)
    L, bins, chroma = image_targets(rgb)
    keep = np.ones(len(kept), dtype=bool)
    if cfg.grayscale == "exclude":
        for k, i in enumerate(kept):
            if chroma[k] < GRAY_CHROMA:
                keep[k] = False
                records[i] = _skip(
                    sources[i], "grayscale", f"grayscale content (mean chroma {chroma[k]:.2f} < {GRAY_CHROMA})"
                )
    kept = [i for k, i in enumerate(kept) if keep[k]]
    arrays = {"L": L[keep], "bins": bins[keep], "label": np.array([sources[i].label for i in kept], dtype=np.int16)}
    counts += np.bincount(arrays["bins"].ravel(), minlength=Q)
    out = {}
    for name, a in arrays.items():
        codecs = array_codecs(name, a.dtype, cfg.zstd_level, cfg.l_codec)
        out[name] = {i: codecs.encode(a[k]) for k, i in enumerate(kept)}
    return out


def _names(cfg: PreprocessConfig) -> list[str]:
    return ["L", "bins", "label"]
