"""Stage 4, building: a source tree -> a finished store, on any executor: `build_store(cfg, store, submit)`.

The sources are found and cut into parts of whole shards; each part is staged by `stage_part`, run through
`submit` (the flow passes its Dask task runner; tests, benchmarks and training's embedded default pass
`serial`), which writes the part's shards straight into the store. This process writes no image data: the arrays'
metadata first, then, once every part is staged, the slots, priors, manifest and attributes. Every step is
deterministic and a part's slots do not depend on the others, so a killed run resumes to the same bytes as an
uninterrupted one, whatever the number of workers.
"""

import logging
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace

import numpy as np

from kernels.gamut import Q
from pipeline.common.cli import Refused
from pipeline.config import PreprocessConfig
from pipeline.layouts import Found, find
from pipeline.part import cut_parts, process_part, slot_count
from pipeline.storage import location
from pipeline.store.lifecycle import StoreState, begin, check_owner, check_target, finalize, held_here, lease_of
from pipeline.store.shards import create_arrays
from pipeline.store.staging import load_sources, part_done, save_sources, staged_summary

MAX_PART = 2048


def auto_part_images(n_sources: int, shard_images: int = 64) -> int:
    """Files per part when not given: the fewest parts of at most MAX_PART files, a multiple of four of them, each
    whole shards.

    Each part is a task with a fixed cost of its own, so parts are large; a multiple of four keeps one, two or
    four workers busy to the end. It depends on the source count only, so that a resumed run cuts the same parts.
    """
    n_parts = -(-max(4, -(-n_sources // MAX_PART)) // 4) * 4
    return whole_shards(max(64, -(-n_sources // n_parts)), shard_images)


def whole_shards(n: int, shard_images: int) -> int:
    """n rounded up to whole shards: a part owns its shards, so that no shard has two writers."""
    return -(-n // shard_images) * shard_images


def stage_part(cfg: PreprocessConfig, store, parts_dir: str, part: int, device: str, threads: int,
               owner: str | None = None) -> dict:  # fmt: skip
    """Stage one part of the source list (or read back its summary if a killed run staged it already). The store
    and cfg's source are locations that bring the run's storage options to the worker; owner: the id of the lease
    the run holds, so that a task left queued by a run that has lost the store does not write into it."""
    if owner is not None:
        check_owner(store, owner, f"part {part}")
    staged = load_sources(parts_dir, part)
    if part_done(store, part):
        return staged_summary(store, part, range(staged.first_slot, staged.first_slot + len(staged.sources)))
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return process_part(cfg, store, part, staged.sources, device, staged.first_slot)


def serial(kwargs: dict) -> Future:
    """`submit` that stages the part here and now."""
    future: Future = Future()
    try:
        future.set_result(stage_part(**kwargs))
    except Exception as e:  # noqa: BLE001 - handed to the caller through the future, as an executor would
        future.set_exception(e)
    return future


def resolve(cfg: PreprocessConfig) -> tuple[PreprocessConfig, Found]:
    """The settings a store records (a local source made absolute, the layout detected, the part size chosen, in
    whole shards) and the sources found; Refused when there are none."""
    from pipeline.imagenet import archive_source

    cfg = archive_source(replace(cfg, source=location(cfg.source).resolve()))
    found = find(cfg)
    if not found.sources:  # checked before anything is written
        raise Refused(f"no sources in {location(cfg.source) / cfg.split} ({found.layout} layout)")
    per = cfg.shard_images
    part = whole_shards(cfg.part_images, per) if cfg.part_images else auto_part_images(len(found.sources), per)
    return replace(cfg, layout=found.layout, part_images=part), found


def build_store(
    cfg: PreprocessConfig,
    store,
    submit: Callable[[dict], Future] = serial,
    workers: int = 1,
    overwrite: bool = False,
    log: logging.Logger | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Build (or finish, or leave alone if complete) the store of `cfg` at `store` (a path or a URL).

    submit(kwargs) starts `stage_part(**kwargs)` and returns a future with `add_done_callback` and `result`.
    workers: how many parts run at once (it sets the threads per part and how far ahead parts are submitted).
    progress(parts staged, parts): called as each part is staged.
    """
    log = log or logging.getLogger("colorize.build")
    t0, cpu0 = time.perf_counter(), time.process_time()
    store = location(store).resolve()
    cfg, found = resolve(cfg)
    if check_target(store, cfg, overwrite, held_here(store)) is StoreState.DONE:  # read only: no lease for that
        log.info("%s is already complete for these settings; nothing to do", store)
        return {"store": str(store), "state": StoreState.DONE.value}
    with lease_of(store) as held:
        state = begin(store, cfg, overwrite, held.record["owner"])
        if state is StoreState.DONE:
            log.info("%s is already complete for these settings; nothing to do", store)
            return {"store": str(store), "state": state.value}
        summaries = _stage_store(cfg, found, store, state, workers, submit, log, progress, held)
        records, index = [], 0
        for s in summaries:
            for r in s["records"]:
                if r["outcome"] == "stored":
                    r["index"] = index
                    index += 1
                records.append(r)
        records += found.skipped  # what could not become a source: bad lines, members without an image, ...
        counts = np.sum([s["counts"] for s in summaries], axis=0) if summaries else np.zeros(Q, np.int64)
        held.check()
        attrs = finalize(store, cfg, records, counts, found.classes)
    seconds, busy = time.perf_counter() - t0, sum(s.get("seconds", 0.0) for s in summaries)
    log.info("stored %d of %d sources in %.1f s: %s", attrs["n_images"], len(records), seconds, attrs["counts"])
    result = {"store": str(store), "state": state.value, "seconds": seconds, "busy_seconds": busy}
    result |= {"driver_cpu_seconds": time.process_time() - cpu0, "n_sources": len(records)}
    return result | {"counts": attrs["counts"], "n_images": attrs["n_images"], "layout": found.layout}


def _stage_store(cfg, found: Found, store: str, state, workers: int, submit, log, progress, held) -> list[dict]:
    """Create the arrays, save the parts' source lists and stage every part; their summaries, in part order.
    held: the run's lease (`check` raises when the run must stop, its lease taken over)."""
    owner, check = held.record["owner"], held.check
    from pipeline.decode import dali_device

    device = dali_device() if cfg.decoder == "auto" else cfg.decoder
    parts = cut_parts(found.sources, cfg.part_images, cfg.shard_images)
    log.info("%s: %d sources (%s layout, %d skipped before decoding) in %d parts, decoder %s (%s)", cfg.source,
             len(found.sources), found.layout, len(found.skipped), len(parts), device, state.value)  # fmt: skip
    n_slots = slot_count(parts)
    create_arrays(store, n_slots, cfg.size, cfg.shard_images, cfg.zstd_level, cfg.l_codec)
    parts_dir = save_sources(store, parts)
    threads = max(1, (os.cpu_count() or 1) // workers)
    task = {"cfg": cfg, "store": store, "parts_dir": parts_dir, "device": device, "threads": threads}
    task["owner"] = owner
    start = lambda k: submit(task | {"part": k})  # noqa: E731

    def step(done: int, n: int) -> None:
        check()
        (progress or (lambda done, n: None))(done, n)

    return _stage_all(len(parts), workers, start, step)


def _stage_all(n_parts: int, workers: int, start: Callable, progress) -> list[dict]:
    """Stage every part, at most 2 x workers of them submitted and not yet done at a time."""
    finished: queue.Queue = queue.Queue()
    summaries: list[dict | None] = [None] * n_parts
    started = 0
    for done in range(n_parts):
        while started < min(n_parts, done + 2 * workers):
            start(started).add_done_callback(finished.put)
            started += 1
        s = finished.get().result()
        summaries[s["part"]] = s
        progress(done + 1, n_parts)
    return summaries
