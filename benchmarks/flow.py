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
one a dataset of ImageNet's size sees.
"""

import argparse
import itertools
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.packing import FORMS, pack
from benchmarks.report import machine, named, summary, write
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
    p.add_argument("--source", help="ImageNet-layout root (default: the shared sample, else the embedded set)")
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
    write("preprocess", data, _markdown(data), args.out)
    return 0


def results(args, w: Workload, times: dict, counts: dict) -> dict:
    """Rates, the flow / floor ratio, and each method's cost per image (slope) and per run (intercept)."""
    n, n_once = len(w.sources), len(w.once)
    stats = {k: summary(v) for k, v in times.items()}
    per = {"floor": n, "pipeline": n, "naive": min(args.naive_images, n), "floor_once": n_once, "pipeline_once": n_once}
    per["pipeline_url"] = n
    per |= {f"pipeline_{form}": n for form in args.layout}
    per["pipeline_url_once"] = n_once
    rate = {k: per[k] / stats[k]["median_s"] for k in stats}
    cpu = {k: float(np.median(v)) for k, v in counts.pop("driver_cpu_s").items()}
    # the flow process's CPU per file as a slope (its per-run part, Prefect's start-up included, left out)
    driver = {k: 1e3 * (cpu[k] - cpu[f"{k}_once"]) / (n - n_once) for k in ("pipeline", "pipeline_url") if k in cpu}
    med = {k: v["median_s"] for k, v in stats.items()}
    slope = {k: (med[k] - med[f"{k}_once"]) / (n - n_once) for k in ("floor", "pipeline")}
    return {
        "source": named(w.origin),
        "repeat": args.repeat,
        "part_images": w.cfg.part_images,
        "files": n,
        "workers": args.workers,
        "machine": machine(),
        "methods": stats,
        "images_per_s": rate,
        "decoded": counts,
        "pipeline_over_floor": med["pipeline"] / med["floor"],
        "files_once": n_once,
        "per_image_ms": {k: v * 1e3 for k, v in slope.items()},
        "per_run_s": {k: med[k] - n * slope[k] for k in slope},
        "per_image_pipeline_over_floor": slope["pipeline"] / slope["floor"],
        "pipeline_vs_naive": rate["pipeline"] / rate["naive"],
        "over_folder": {form: rate[f"pipeline_{form}"] / rate["pipeline"] for form in args.layout},
        "url_over_local": rate["pipeline_url"] / rate["pipeline"] if "pipeline_url" in rate else None,
        "store_url": args.store_url,
        "driver_cpu_ms_per_file": driver,
        "driver_cpu_s": cpu,
    }


def _markdown(d: dict) -> str:
    m, r = d["methods"], d["images_per_s"]
    mach = d["machine"]
    by = d["store_bytes_per_image_by_array"]
    lines = [
        "# Preprocessing throughput",
        "",
        f"Source: {d['source']} ({d['files']} files: each listed {d['repeat']}x). "
        f"Machine: {mach['cpu']}, {mach['cores']} cores; {d['workers']} Dask worker processes, one thread each.",
        "",
        "| method | median per pass | images/s | runs |",
        "|---|---|---|---|",
        f"| decode + resize floor (DALI only) | {m['floor']['median_s']:.2f} s | {r['floor']:.0f} "
        f"| {m['floor']['runs']} |",
        f"| the flow on the warm cluster (all stages, Prefect included) | {m['pipeline']['median_s']:.2f} s "
        f"| **{r['pipeline']:.0f}** | {m['pipeline']['runs']} |",
        f"| naive: Pillow + scikit-image + Zhang soft-encoding | {m['naive']['median_s']:.2f} s "
        f"| {r['naive']:.1f} | {m['naive']['runs']} |",
        "",
        f"- pipeline / floor: **{d['pipeline_over_floor']:.2f}x** the time (target <= 1.5x); "
        f"{d['pipeline_vs_naive']:.0f}x the naive baseline's rate",
        f"- the same with every file listed once ({d['files_once']} files): floor {m['floor_once']['median_s']:.2f} s, "
        f"flow {m['pipeline_once']['median_s']:.2f} s. Split into a cost per image (slope) and per run (intercept): "
        f"floor {d['per_image_ms']['floor']:.2f} ms/image + {d['per_run_s']['floor']:.2f} s, flow "
        f"{d['per_image_ms']['pipeline']:.2f} ms/image + {d['per_run_s']['pipeline']:.2f} s; per image the flow "
        f"costs **{d['per_image_pipeline_over_floor']:.2f}x** the floor (the ratio at ImageNet's size)",
        f"- whole Prefect flow, end to end (temporary server, Dask cluster start and stop included): "
        f"{d['flow_end_to_end_s']:.1f} s = {d['flow_images_per_s']:.0f} images/s; outcomes {d['flow_outcomes']}",
        f"- store: **{d['store_bytes_per_image'] / 1000:.1f} kB per image** (target <= 30 kB): "
        + ", ".join(f"{k} {v / 1000:.1f} kB" for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v >= 50),
        f"- peak RSS of a worker: {d['worker_peak_rss_mb']:.0f} MB (target <= 2 GB)",
        "",
    ]
    names = {"pipeline": "to local disk", "pipeline_url": "into the object store"}
    lines[-1:-1] = [
        "- the flow process's own CPU per file (target <= 0.05 ms; the slope between the runs on "
        f"{d['files_once']} and {d['files']} files, medians; the Dask scheduler runs in a process apart, as on a "
        "cluster): " + ", ".join(f"{names[k]} {v:.3f} ms" for k, v in d["driver_cpu_ms_per_file"].items())
    ]
    if d["url_over_local"]:
        lines[-1:-1] = [
            f"- into an object store ({d['store_url']}), the same files: {m['pipeline_url']['median_s']:.2f} s = "
            f"**{r['pipeline_url']:.0f} images/s**, {d['url_over_local']:.2f}x the rate to local disk"
        ]
    if d["over_folder"]:
        lines += ["The same files in each distributed form, read in place, in the same interleaved rounds:", "",
                  "| form | median per pass | images/s | / class folders | best pass / best pass |",
                  "|---|---|---|---|---|",
                  f"| class folders | {m['pipeline']['median_s']:.2f} s | {r['pipeline']:.0f} | 1.00x "
                  "| 1.00x |"]  # fmt: skip
        best = m["pipeline"]["min_s"]
        lines += [
            f"| {FORM_NAMES[f]} | {m[f'pipeline_{f}']['median_s']:.2f} s | {r[f'pipeline_{f}']:.0f} | **{x:.2f}x** "
            f"| {best / m[f'pipeline_{f}']['min_s']:.2f}x |"
            for f, x in d["over_folder"].items()
        ] + [""]
    return "\n".join(lines)


FORM_NAMES = {"tar": "WebDataset tar shards", "train-archive": "ILSVRC2012_img_train.tar (tars in a tar)",
              "class-tars": "per-class tars", "val-archive": "ILSVRC2012_img_val.tar + LOC_val_solution.csv",
              "parquet": "Hugging Face Parquet (row groups of 100)",
              "tar-gz": "gzip'd tar shards (one part each)"}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
