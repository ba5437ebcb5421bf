"""Preprocessing throughput: images/s end to end, against the decode + resize floor and a naive baseline.

First the whole Prefect flow once, as a user runs it (temporary Prefect server, Dask cluster start and stop
included), into a store whose bytes per image are reported. Then, on one warm local Dask cluster (the flow's
own set-up: one single-threaded worker process per core), in interleaved rounds:
  floor     read the files, DALI decode + resize + center crop, nothing else, as Dask tasks;
  pipeline  the flow itself (`--dask-address` of that cluster): discover, read, probe, DALI, L + S/4 targets,
            histograms, staging, Zarr shards, prior and weights, manifest; Prefect's bookkeeping included;
  naive     Pillow decode + resize, scikit-image Lab, Zhang's soft-encoding of the S/4 block means (Eq. 1-4),
            on the first `--naive-images` files only (it is slow).
Peak RSS of every worker is read from the workers after the runs. Every file is listed `--repeat` times
(symlinks) so that the fixed cost of a Prefect flow run does not dominate a sample of 800 files; the floor and
the flow also run on the files listed once, in the same rounds, which splits each into a fixed cost per run
and a cost per image (the slope between the two sizes): the flow/floor ratio of the per-image costs is the
one a dataset of ImageNet's size sees. What the report derives from the timings, and its markdown, are
`benchmarks.flow_report`.
"""

import argparse
import itertools
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.flow_report import markdown, results
from benchmarks.packing import FORMS, pack
from benchmarks.report import write
from pipeline.common.cli import ArgumentParser


def _floor_part(cfg, part: int, sources: list) -> int:
    from pipeline.part import part_cropper

    root = Path(cfg.source)
    blobs = [(root / s.path).read_bytes() for s in sources]
    return sum(c[0] is not None for c in part_cropper(cfg, "cpu").crops(blobs))


def _naive_part(cfg, sources: list) -> int:
    from PIL import Image
    from skimage.color import rgb2lab

    from benchmarks.photos import center_crop
    from kernels.zhang import soft_encode

    n = 0
    for s in sources:
        try:
            with Image.open(Path(cfg.source) / s.path) as img:
                rgb = center_crop(img, cfg.size)
        except OSError:
            continue
        ab = rgb2lab(rgb)[..., 1:]
        h = cfg.size // 4
        z = soft_encode(ab.reshape(h, 4, h, 4, 2).mean(axis=(1, 3)).reshape(-1, 2))  # Eq. 1, dense (P, Q)
        z.argmax(axis=1)  # Eq. 2
        n += 1
    return n


def _repeated(source: Path, root: Path, k: int) -> Path:
    """A tree listing every file of source/train k times (symlinks), so that fixed costs are amortised."""
    for f in sorted((source / "train").glob("*/*")):
        d = root / "train" / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(k):
            (d / f"r{i}_{f.name}").symlink_to(f.resolve())
    if (source / "synsets.txt").is_file():
        (root / "synsets.txt").symlink_to((source / "synsets.txt").resolve())
    return root


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _store_bytes(store: Path) -> dict[str, int]:
    out = {}
    for child in store.iterdir():
        files = [child] if child.is_file() else list(child.rglob("*"))
        out[child.name] = sum(f.stat().st_size for f in files if f.is_file())
    return out


@dataclass
class Workload:
    """The files of the benchmark: every file listed `repeat` times, and once (the small size of the slope)."""

    origin: Path
    source: Path
    sources: list
    cfg: object
    parts: list
    once: list
    cfg_once: object
    parts_once: list


def workload(args, tmp: Path) -> Workload:
    from benchmarks.photos import imagenet_sample
    from pipeline.build import auto_part_images
    from pipeline.config import PreprocessConfig
    from pipeline.discover import discover
    from pipeline.embedded import build_embedded_dataset
    from pipeline.part import cut_parts

    origin = Path(args.source) if args.source else imagenet_sample() or build_embedded_dataset(tmp / "embedded")
    source = _repeated(origin, tmp / "repeated", args.repeat)
    shapes = []
    for root in (source, origin):
        files, _ = discover(root, "train")
        part = args.part_images or auto_part_images(len(files))
        cfg = PreprocessConfig(source=str(root.resolve()), part_images=part)
        shapes.append((files, cfg, [p.sources for p in cut_parts(files, part, cfg.shard_images)]))
    return Workload(origin, source, *shapes[0], *shapes[1])


def interleaved(args, w: Workload, tmp: Path) -> tuple[dict, dict, dict]:
    """(seconds per method per round, images per method, peak RSS per worker) on one warm cluster of processes
    apart (one single-threaded worker per core, the flow's malloc settings), so that this process's CPU time is
    the flow's own."""
    from distributed import Client

    from benchmarks.cluster import dask_cluster
    from flows.preprocess import run_in_process

    n = len(w.sources)
    naive_sources = [
        [w.sources[i] for i in k] for k in np.array_split(np.arange(min(args.naive_images, n)), args.workers)
    ]
    times: dict[str, list[float]] = {"floor": [], "pipeline": [], "naive": [], "floor_once": [], "pipeline_once": []}
    counts: dict = {}
    driver_s: dict[str, list[float]] = {}  # the flow process's CPU seconds, per run
    with dask_cluster(args.workers, tmp) as (address, _), Client(address) as client:

        def floor(cfg=w.cfg, parts=w.parts):
            futures = client.map(_floor_part, [cfg] * len(parts), range(len(parts)), parts, pure=False)
            return sum(client.gather(futures))

        runs = itertools.count()

        def pipeline(source=w.source, into: str = str(tmp), name: str = "pipeline", split: str = "train"):
            out = run_in_process(source=str(source), store=f"{into}/run{next(runs)}.zarr", dask_address=address,
                                 part_images=args.part_images, quality=False, split=split)  # fmt: skip
            driver_s.setdefault(name, []).append(out["driver_cpu_seconds"])
            return out["n_images"]

        def naive():
            futures = client.map(_naive_part, [w.cfg] * len(naive_sources), naive_sources, pure=False)
            return sum(client.gather(futures))

        floor()
        pipeline()  # numba caches and DALI pipelines loaded in the workers
        methods = {"floor": floor, "pipeline": pipeline, "naive": naive}
        once = {"floor_once": lambda: floor(w.cfg_once, w.parts_once)}
        methods |= once | {"pipeline_once": lambda: pipeline(w.origin, name="pipeline_once")}
        for form in args.layout:  # the same files in each distributed form, read in place
            root, split = pack(form, w.source, tmp / form)
            times[f"pipeline_{form}"] = []
            methods[f"pipeline_{form}"] = lambda root=root, split=split: pipeline(root, split=split)
            methods[f"pipeline_{form}"]()  # warm, as the folder's run above
        if args.store_url:  # the same files into an object store: each part PUTs its own shards
            url = f"{args.store_url.rstrip('/')}/{tmp.name}"  # this run's own prefix, removed at the end
            times["pipeline_url"], times["pipeline_url_once"] = [], []
            methods["pipeline_url"] = lambda: pipeline(into=url, name="pipeline_url")
            methods["pipeline_url_once"] = lambda: pipeline(w.origin, into=url, name="pipeline_url_once")
        for _ in range(args.rounds):  # interleaved, so that machine noise hits all methods alike
            for name, fn in methods.items():
                t0 = time.perf_counter()
                counts[name] = fn()
                times[name].append(time.perf_counter() - t0)
        rss = client.run(_rss_mb)
    if args.store_url:
        from pipeline.storage import location
        from pipeline.storage.files import remove_tree

        remove_tree(location(url))
    return times, counts | {"driver_cpu_s": driver_s}, rss


def _forms(text: str) -> tuple[str, ...]:
    forms = tuple(FORMS) if text == "all" else tuple(f for f in text.split(",") if f != "classes")
    if unknown := [f for f in forms if f not in FORMS]:
        raise argparse.ArgumentTypeError(f"unknown form {unknown[0]!r}: {', '.join(FORMS)} or all")
    return forms


def main(argv=None) -> int:
    from flows.preprocess import run_in_process

    p = ArgumentParser(prog="python -m benchmarks preprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="ImageNet-layout root (default: the ImageNet sample, else the embedded set)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=4, help="list every source file this many times (symlinks), >= 2")
    p.add_argument("--naive-images", type=int, default=64)
    p.add_argument("--part-images", type=int, help="files per Prefect task (the flow's option; default: its own)")
    p.add_argument("--layout", type=_forms, default=(), metavar="FORM[,FORM...]|all",
                   help=f"also the flow on the same files packed in these forms: {', '.join(FORMS)}")  # fmt: skip
    p.add_argument("--store-url", help="also write the stores under this object store prefix (s3://...), interleaved")
    p.add_argument("--out", default="reports/benchmarks")
    args = p.parse_args(argv)
    if args.repeat < 2:
        p.error("--repeat must be >= 2 (the per-image cost is the slope between the files listed once and repeated)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    w = workload(args, tmp)
    # 1. The whole flow once, as a user runs it: temporary Prefect server and a new Dask cluster included (the
    # data-quality check, a task after the store is written, is left out here and in the steady state).
    t0 = time.perf_counter()
    store = tmp / "flow.zarr"
    result = run_in_process(
        source=str(w.source), store=str(store), workers=args.workers, part_images=args.part_images, quality=False
    )
    flow_s = time.perf_counter() - t0
    sizes = _store_bytes(store)
    # 2. Steady state on one warm cluster, interleaved.
    times, counts, worker_rss = interleaved(args, w, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    data = results(args, w, times, counts) | {
        "flow_end_to_end_s": flow_s,
        "flow_images_per_s": len(w.sources) / flow_s,
        "flow_outcomes": result["counts"],
        "store_bytes": sizes,
        "store_bytes_per_image": sum(sizes.values()) / max(1, result["n_images"]),
        "store_bytes_per_image_by_array": {k: v / max(1, result["n_images"]) for k, v in sizes.items()},
        "worker_peak_rss_mb": max(worker_rss.values()),
    }
    write("preprocess", data, markdown(data), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
