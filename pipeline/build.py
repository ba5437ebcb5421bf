"""Stage 4, building: a source tree -> a finished store, on any executor: `build_store(cfg, store, submit)`.

The sources are discovered and cut into parts; each part is staged by `stage_part`, run through `submit` (the
flow passes its Dask task runner, tests, benchmarks and training's embedded default pass `serial`); this
process writes every shard as soon as the parts under it are staged, then the priors, manifest and attributes.
Every step is deterministic, so a killed run resumes to the same bytes as an uninterrupted one.
"""

import logging
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import numpy as np

from kernels.gamut import Q
from pipeline.config import PreprocessConfig
from pipeline.layouts import Found, find
from pipeline.part import cut_parts, process_part
from pipeline.store.format import StoreState, begin, finalize
from pipeline.store.shards import create_arrays, resize_arrays, write_shard
from pipeline.store.staging import load_sources, part_done, save_sources, shard_marker, staged_summary

MAX_PART = 2048


def auto_part_images(n_sources: int) -> int:
    """Files per part when not given: the fewest parts of at most MAX_PART files, a multiple of four of them.

    Each part is a task with a fixed cost of its own, so parts are large; a multiple of four keeps one, two or
    four workers busy to the end. It depends on the source count only, so that a resumed run cuts the same parts.
    """
    n_parts = -(-max(4, -(-n_sources // MAX_PART)) // 4) * 4
    return max(64, -(-n_sources // n_parts))


def stage_part(cfg: PreprocessConfig, store: str, parts_dir: str, part: int, device: str, threads: int) -> dict:
    """Stage one part of the source list (or read back its summary if a killed run staged it already)."""
    if part_done(Path(store), part):
        return staged_summary(store, part)
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return process_part(cfg, store, part, load_sources(parts_dir, part), device)


def serial(kwargs: dict) -> Future:
    """`submit` that stages the part here and now."""
    future: Future = Future()
    try:
        future.set_result(stage_part(**kwargs))
    except Exception as e:  # noqa: BLE001 - handed to the caller through the future, as an executor would
        future.set_exception(e)
    return future


def resolve(cfg: PreprocessConfig) -> tuple[PreprocessConfig, Found]:
    """The settings a store records (source made absolute, layout detected, part size chosen) and the sources
    found; ValueError when there are none."""
    cfg = replace(cfg, source=str(Path(cfg.source).resolve()))
    found = find(cfg)
    if not found.sources:  # checked before anything is written
        raise ValueError(f"no sources in {Path(cfg.source) / cfg.split} ({found.layout} layout)")
    return replace(cfg, layout=found.layout, part_images=cfg.part_images or auto_part_images(len(found.sources))), found


def build_store(
    cfg: PreprocessConfig,
    store: str | Path,
    submit: Callable[[dict], Future] = serial,
    workers: int = 1,
    overwrite: bool = False,
    log: logging.Logger | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Build (or finish, or leave alone if complete) the store of `cfg` at `store`.

    submit(kwargs) starts `stage_part(**kwargs)` and returns a future with `add_done_callback` and `result`.
    workers: how many parts run at once (it sets the threads per part and how far ahead parts are submitted).
    progress(parts staged, parts): called as each part is staged.
    """
    log = log or logging.getLogger("colorize.build")
    t0 = time.perf_counter()
    store = str(Path(store).resolve())
    cfg, found = resolve(cfg)
    sources, class_list = found.sources, found.classes
    state = begin(Path(store), cfg, overwrite)
    if state is StoreState.DONE:
        log.info("%s is already complete for these settings; nothing to do", store)
        return {"store": store, "state": state.value}
    from pipeline.decode import dali_device

    device = dali_device() if cfg.decoder == "auto" else cfg.decoder
    parts = cut_parts(sources, cfg.part_images)
    log.info("%s: %d sources (%s layout, %d skipped before decoding) in %d parts, decoder %s (%s)", cfg.source,
             len(sources), found.layout, len(found.skipped), len(parts), device, state.value)  # fmt: skip
    parts_dir = str(save_sources(Path(store), parts))
    threads = max(1, (os.cpu_count() or 1) // workers)
    task = {"cfg": cfg, "store": store, "parts_dir": parts_dir, "device": device, "threads": threads}
    start = lambda k: submit(task | {"part": k})  # noqa: E731
    summaries = _stage_all(cfg, store, len(parts), len(sources), workers, start, progress or (lambda done, n: None))
    records, index = [], 0
    for s in summaries:
        for r in s["records"]:
            if r["outcome"] == "stored":
                r["index"] = index
                index += 1
            records.append(r)
    records += found.skipped  # what could not become a source: bad lines, members without an image, ...
    counts = np.sum([s["counts"] for s in summaries], axis=0) if summaries else np.zeros(Q, np.int64)
    attrs = finalize(Path(store), cfg, records, counts, class_list)
    seconds, busy = time.perf_counter() - t0, sum(s.get("seconds", 0.0) for s in summaries)
    log.info("stored %d of %d sources in %.1f s: %s", attrs["n_images"], len(records), seconds, attrs["counts"])
    result = {"store": store, "state": state.value, "seconds": seconds, "busy_seconds": busy}
    return result | {"counts": attrs["counts"], "n_images": attrs["n_images"], "layout": found.layout}


def _stage_all(cfg, store: str, n_parts: int, n_sources: int, workers: int, start: Callable, progress) -> list[dict]:
    """Stage every part; write each shard as soon as the parts before and under it are staged.

    At most 2 x workers parts past the first one not yet staged are started at a time, so the chunks staged
    and not yet in shards never exceed that many parts (plus the part whose last shard waits on the next).
    """
    shard = cfg.shard_images
    # N is known only once every part is staged: the arrays start at the number of sources and shrink.
    create_arrays(Path(store), n_sources, cfg.size, cfg.full_bins, shard, cfg.zstd_level, cfg.l_codec)
    finished: queue.Queue = queue.Queue()
    summaries: list[dict | None] = [None] * n_parts
    layout: list[tuple[int, int, int]] = []  # (part, first index, count) of the staged prefix
    loaded: dict = {}  # staged parts read by the shard writer and not yet done with
    started, first, ready = 0, 0, 0
    for done in range(n_parts):
        while started < min(n_parts, len(layout) + 2 * workers):
            start(started).add_done_callback(finished.put)
            started += 1
        s = finished.get().result()
        summaries[s["part"]] = s
        progress(done + 1, n_parts)
        while len(layout) < n_parts and summaries[len(layout)] is not None:
            k = len(layout)
            layout.append((k, first, summaries[k]["stored"]))
            first += summaries[k]["stored"]
        for k in range(ready, first // shard):  # shards wholly inside the staged prefix
            _write_shard(store, k, shard, layout, loaded)
        ready = max(ready, first // shard)
    resize_arrays(Path(store), first)
    for k in range(ready, -(-first // shard)):
        _write_shard(store, k, shard, layout, loaded)
    return summaries


def _write_shard(store: str, k: int, shard_images: int, layout: list, loaded: dict) -> None:
    if not shard_marker(Path(store), k).is_file():  # finished by an earlier, killed run
        write_shard(Path(store), k, shard_images, layout, loaded)
