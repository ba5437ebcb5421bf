"""Prefect flow `preprocess-imagenet`: a photo folder -> a Zarr v3 store of L, bins, labels and priors.

Wiring only; the stages live in `pipeline/`. The source list is cut into parts; each part is one Prefect
task run on Dask (prefect-dask's `DaskTaskRunner`: a local cluster by default, an existing one given its
address) that stages its images' chunks already encoded; the flow writes each Zarr shard from them as soon as
the parts under it are staged, then reduces the per-part histograms to the prior and weights and writes the
attributes.

    python -m flows.preprocess SOURCE STORE [--split train] [--size 224] [--classes WNIDS|FILE]
        [--per-class N] [--dask-address tcp://host:8786] [--workers N] ...

runs the flow in this process; `python -m flows.serve` serves it as the deployment
`preprocess-imagenet/default` of a Prefect server (see README).
"""

import argparse
import dataclasses
import json
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.cluster import check_dask_address, dask_runner
from kernels.gamut import Q
from pipeline.discover import Source, discover, read_classes
from pipeline.preprocess import PreprocessConfig, cut_parts, process_part, staged_summary
from pipeline.store import (
    begin,
    create_arrays,
    finalize,
    part_done,
    resize_arrays,
    shard_marker,
    staging_dir,
    write_shard,
)

FLOW_NAME = "preprocess-imagenet"
PARTS_DIR = "parts"  # in the staging area: one file per part, its source list


@task(name="stage-part", cache_policy=NO_CACHE)
def stage_part(cfg: PreprocessConfig, store: str, parts_dir: str, part: int, device: str, threads: int) -> dict:
    """Decode and encode one part of the source list (or read back its summary if already staged).

    The part's sources are read from its own file in the staging area: as a task parameter, a list of hundreds
    of sources was walked by Prefect, pickled and hashed by Dask on every submit (0.2 s of the driver's CPU per
    task); one file per part, so that a task does not parse the whole source list.
    """
    if part_done(Path(store), part):
        return staged_summary(store, part)
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return process_part(cfg, store, part, _load_part_sources(parts_dir, part), device)


def _write_shard(store: str, k: int, shard_images: int, layout: list, loaded: dict) -> None:
    if not shard_marker(Path(store), k).is_file():  # finished by an earlier, killed run
        write_shard(Path(store), k, shard_images, layout, loaded)


def auto_part_images(n_sources: int) -> int:
    """Files per part when not given: the fewest parts of at most 2,048 files, a multiple of four of them.

    Each part is a Prefect task run, with a fixed cost of its own (docs/performance.md), so parts are large; a
    multiple of four keeps one, two or four workers busy to the end. A part holds one DALI batch of pixels at a
    time, so its size does not set memory. It depends on the source count only, so that a resumed run cuts the
    same parts.
    """
    n_parts = -(-max(4, -(-n_sources // 2048)) // 4) * 4
    return max(64, -(-n_sources // n_parts))


def _save_parts(store: str, parts: list[list[Source]]) -> str:
    """Write each part's source list to the store's staging area; returns the folder the part tasks read."""
    folder = staging_dir(Path(store)) / PARTS_DIR
    folder.mkdir(exist_ok=True)
    for k, p in enumerate(parts):
        (folder / f"{k:06d}.json").write_text(json.dumps([dataclasses.astuple(s) for s in p]))
    return str(folder)


def _load_part_sources(parts_dir: str, part: int) -> list[Source]:
    return [Source(*s) for s in json.loads((Path(parts_dir) / f"{part:06d}.json").read_text())]


def _run_stages(
    runner, cfg: PreprocessConfig, store: str, parts_dir: str, n_parts: int, n_sources: int, device: str, workers: int
) -> list[dict]:
    """Stage every part on Dask; write each Zarr shard here as soon as the parts before and under it are staged.

    runner: a started DaskTaskRunner. The parts are submitted to it from inside the flow run, so they are task
    runs of this flow run (a subflow that carried the runner cost a second flow run: 0.36 s of a 16-file run,
    measured).
    This flow's process is the one writer of every shard (concurrent partial writes of a shard lose data:
    zarr-python issue 3682). Writing is cheap: the parts stage their chunks already encoded, so a shard is
    their concatenation and an index (`pipeline.chunks`), ~0.1 ms per image against ~4 ms to stage it.
    The parts come as files, not a parameter: Prefect copies a flow run's parameters into the context of
    every task it submits, and Dask then hashes that context per task, which made the driver spend half a
    core on 3,200 sources (measured).
    At most 2 x workers parts past the first one not yet staged are submitted at a time, so the chunks staged
    and not yet in shards never exceed that many parts, plus the one whose last shard waits on the next part,
    whatever the size of the dataset.
    """
    log = get_run_logger()
    shard = cfg.shard_images
    # N is known only once every part is staged: the arrays start at the number of sources and shrink.
    create_arrays(Path(store), n_sources, cfg.size, cfg.full_bins, shard, cfg.zstd_level)
    threads = max(1, (os.cpu_count() or 1) // workers)
    args = {"cfg": cfg, "store": store, "parts_dir": parts_dir, "device": device, "threads": threads}
    finished: queue.Queue = queue.Queue()
    submitted = 0
    summaries: list[dict | None] = [None] * n_parts
    layout: list[tuple[int, int, int]] = []  # (part, first index, count) of the staged prefix
    loaded: dict = {}  # staged parts read by the shard writer and not yet done with
    first, ready = 0, 0
    for _ in range(n_parts):
        while submitted < min(n_parts, len(layout) + 2 * workers):
            runner.submit(stage_part, parameters=args | {"part": submitted}).add_done_callback(finished.put)
            submitted += 1
        s = finished.get().result()
        summaries[s["part"]] = s
        while len(layout) < n_parts and summaries[len(layout)] is not None:
            k = len(layout)
            layout.append((k, first, summaries[k]["stored"]))
            first += summaries[k]["stored"]
        for k in range(ready, first // shard):  # shards wholly inside the staged prefix
            _write_shard(store, k, shard, layout, loaded)
        ready = max(ready, first // shard)
    n = first
    resize_arrays(Path(store), n)
    for k in range(ready, -(-n // shard)):
        _write_shard(store, k, shard, layout, loaded)
    busy = sum(s.get("seconds", 0.0) for s in summaries)
    log.info("staged %d parts (%.1f s of work), wrote %d shards: %d images", n_parts, busy, -(-n // shard), n)
    return summaries


@flow(name=FLOW_NAME, log_prints=True)
def preprocess_imagenet(
    source: str,
    store: str,
    split: str = "train",
    size: int = 224,
    classes: str | None = None,
    per_class: int | None = None,
    seed: int = 0,
    grayscale: str = "exclude",
    full_bins: bool = False,
    lam: float = 0.5,
    part_images: int | None = None,
    shard_images: int = 64,
    decoder: str = "auto",
    dask_address: str | None = None,
    workers: int | None = None,
    gpus: int = 0,
    overwrite: bool = False,
) -> dict:
    """Preprocess `source/split` into the store `store` (Sec. 3.2, 4.1, 4.2 of Wang et al.)."""
    log = get_run_logger()
    t0 = time.perf_counter()
    cfg = PreprocessConfig(
        source=str(Path(source).resolve()),
        split=split,
        size=size,
        classes=read_classes(classes),
        per_class=per_class,
        seed=seed,
        grayscale=grayscale,
        full_bins=full_bins,
        lam=lam,
        part_images=1 if part_images is None else part_images,  # validated here; None is resolved below
        shard_images=shard_images,
        decoder=decoder,
    )
    store = str(Path(store).resolve())
    sources, class_list = discover(Path(cfg.source), cfg.split, cfg.classes, cfg.per_class, cfg.seed)
    if not sources:  # checked before anything is written
        raise ValueError(f"no files under {Path(cfg.source) / cfg.split}")
    if part_images is None:
        cfg = dataclasses.replace(cfg, part_images=auto_part_images(len(sources)))
    state = begin(Path(store), cfg, overwrite)
    if state == "done":
        log.info("%s is already complete for these settings; nothing to do", store)
        return {"store": store, "state": "done"}
    from pipeline.decode import dali_device

    device = dali_device() if cfg.decoder == "auto" else cfg.decoder
    n_workers = gpus or workers or os.cpu_count() or 1
    parts = cut_parts(sources, cfg.part_images)
    log.info("%s: %d sources in %d parts, decoder %s (%s)", cfg.source, len(sources), len(parts), device, state)
    parts_dir = _save_parts(store, parts)
    with dask_runner(dask_address, workers, gpus) as runner:
        summaries = _run_stages(runner, cfg, store, parts_dir, len(parts), len(sources), device, n_workers)
    records, index = [], 0
    for s in summaries:
        for r in s["records"]:
            if r["outcome"] == "stored":
                r["index"] = index
                index += 1
            records.append(r)
    counts = np.sum([s["counts"] for s in summaries], axis=0) if summaries else np.zeros(Q, np.int64)
    attrs = finalize(Path(store), cfg, records, counts, class_list)
    dt = time.perf_counter() - t0
    log.info("stored %d of %d sources in %.1f s: %s", attrs["n_images"], len(records), dt, attrs["counts"])
    busy = sum(s.get("seconds", 0.0) for s in summaries)  # the part tasks' own time, summed over the workers
    result = {"store": store, "state": state, "seconds": dt, "busy_seconds": busy, "counts": attrs["counts"]}
    return result | {"n_images": attrs["n_images"]}


def run_in_process(**params) -> dict:
    """Run the flow in this process (the CLI, the benchmark, training's embedded default).

    Prefect's heartbeat thread sleeps in 1 s steps and a flow run joins it on exit, which rounds every run up
    to the next whole second of the thread (a 16-file run: 1.1 s with it, 0.55 s without, measured). A heartbeat
    only serves a server-side automation that marks silent runs as crashed; an in-process run goes without one
    unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set. Runs of the served deployment keep Prefect's default.
    """
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ:
        return preprocess_imagenet(**params)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return preprocess_imagenet(**params)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.preprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="root of a class-per-folder tree: SOURCE/SPLIT/<class>/<files>")
    p.add_argument("store", help="the Zarr v3 store to write (one per split)")
    p.add_argument("--split", default="train")
    p.add_argument("--size", type=int, default=224, help="canonical size S (a multiple of 4)")
    p.add_argument("--classes", help="class subset: comma-separated wnids or a file of them")
    p.add_argument("--per-class", type=int, help="at most this many files per class (seeded draw)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grayscale", choices=("exclude", "include"), default="exclude")
    p.add_argument("--full-bins", action="store_true", help="also store the category of every pixel")
    p.add_argument("--lam", type=float, default=0.5, help="lambda of the balance weights (Eq. 10)")
    p.add_argument(
        "--part-images", type=int, help="files per Prefect task (default: parts of <= 2048 files, 4k of them)"
    )
    p.add_argument("--shard-images", type=int, default=64, help="images per Zarr shard")
    p.add_argument("--decoder", choices=("auto", "cpu", "mixed"), default="auto")
    p.add_argument("--dask-address", help="scheduler of an existing Dask cluster (default: a local one)")
    p.add_argument("--workers", type=int, help="local Dask worker processes (default: one per core)")
    p.add_argument("--gpus", type=int, default=0, help="local workers: one per GPU, each pinned to its own")
    p.add_argument("--overwrite", action="store_true", help="rebuild a store built with other settings")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not (Path(args.source) / args.split).is_dir():
            raise FileNotFoundError(f"no split folder {Path(args.source) / args.split}")
        PreprocessConfig(
            source=args.source,
            split=args.split,
            size=args.size,
            per_class=args.per_class,
            grayscale=args.grayscale,
            lam=args.lam,
            part_images=1 if args.part_images is None else args.part_images,
            shard_images=args.shard_images,
            decoder=args.decoder,
        )
        if not discover(Path(args.source), args.split, read_classes(args.classes), args.per_class, args.seed)[0]:
            raise ValueError(f"no files under {Path(args.source) / args.split}")
        if args.workers is not None and args.workers < 1:
            raise ValueError("--workers must be >= 1")
        if args.gpus < 0 or (args.gpus and (args.dask_address or args.workers not in (None, args.gpus))):
            raise ValueError("--gpus N starts N local workers, one per GPU: not with --dask-address or other --workers")
        if args.dask_address:
            check_dask_address(args.dask_address)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = run_in_process(**vars(args))
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
