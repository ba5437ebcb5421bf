"""The preprocessing flow at growing sizes, as a user runs it, extrapolated to ImageNet-1k train.

For each size N, a source tree of N hard links to the photos of the ImageNet sample (distinct names, ImageNet
layout, in a temporary folder) goes through `python -m flows.preprocess --dask-address` in a process of its
own, on a Dask scheduler and workers started for the run in processes apart, as on a multi-node cluster: so
the flow process's CPU time is its own, not the scheduler's. Every --poll seconds the benchmark reads the flow
process's peak RSS (the kernel's high-water mark, VmHWM), the RSS of every process of the run (the flow, its
Prefect server, the scheduler and the workers), and the flow process's CPU time. Reported per
size: wall time, store bytes, the driver's CPU time, and the part tasks' own time per
file (summed over the workers: the cost that scales, free of start-up); between sizes: the cost per image
(the slope of wall time) and per run (the intercept), and the driver's RSS growth per 100,000 images. With
--rounds R every size runs R times, the sizes interleaved, and the medians are kept. Then the loader on the
largest store (`benchmarks.loader`, the store in the page cache), and the extrapolation to 1,281,167 images on
2 and on 64 workers.
"""

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.cluster import dask_cluster
from benchmarks.report import machine, write
from pipeline.common.cli import ArgumentParser

IMAGENET_TRAIN = 1_281_167
GOALS = {"slope_flat": 0.10, "driver_rss_gb": 2.0}


def source_tree(sample: Path, root: Path, n: int) -> Path:
    """root/train/<wnid>/<wnid>_<k>.JPEG: n hard links (symlinks across file systems) spread over the classes."""
    photos = sorted(p for d in sorted((sample / "train").iterdir()) for p in sorted(d.iterdir())[:1])
    for c, photo in enumerate(photos):
        folder = root / "train" / photo.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n // len(photos) + (c < n % len(photos))):
            link = folder / f"{photo.parent.name}_{k:06d}{photo.suffix}"
            try:
                os.link(photo, link)
            except OSError:
                link.symlink_to(photo.resolve())
    if (sample / "synsets.txt").is_file():
        shutil.copy(sample / "synsets.txt", root / "synsets.txt")
    return root


def _hwm_mb(pid: int) -> float:
    """The peak RSS the kernel recorded for a process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree_rss(procs) -> float:
    """The RSS of processes and everything under them, in bytes."""
    import psutil

    total = 0
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_flow(source: Path, store: Path, workers: int, poll: float) -> dict:
    """Run the flow as a user does on a cluster of its own and watch it: wall time, RSS (driver, all), driver
    CPU."""
    with dask_cluster(workers, store.parent) as (address, cluster):
        return _watch(source, store, address, cluster, poll)


def _watch(source: Path, store: Path, address: str, cluster: list, poll: float) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "flows.preprocess", str(source), str(store), "--dask-address", address, "--no-quality"]
    peak = {"driver_rss_mb": 0.0, "all_rss_mb": 0.0, "driver_cpu_s": 0.0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    driver = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak["driver_rss_mb"] = max(peak["driver_rss_mb"], _hwm_mb(proc.pid))
            cpu = driver.cpu_times()
            peak["driver_cpu_s"] = cpu.user + cpu.system
            peak["all_rss_mb"] = max(peak["all_rss_mb"], _tree_rss([proc, *cluster]) / 2**20)
        except (OSError, psutil.Error):
            pass
        time.sleep(poll)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"the flow failed on {source}:\n{''.join(log[-30:])}")
    result = ast.literal_eval(next(line for line in reversed(log) if line.startswith("{")))
    from pipeline.store.format import open_store

    attrs = dict(open_store(store).attrs)
    nbytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    row = peak | {"wall_s": wall, "busy_s": result["busy_seconds"], "images": attrs["n_images"]}
    return row | {"sources": attrs["n_sources"], "store_bytes": nbytes}


def median_row(runs: list[dict]) -> dict:
    """One size's runs as one row: the median of the times, the largest of the peaks."""
    row = dict(runs[0])
    for k in ("wall_s", "busy_s", "driver_cpu_s"):
        row[k] = statistics.median(r[k] for r in runs)
    for k in ("driver_rss_mb", "all_rss_mb"):
        row[k] = max(r[k] for r in runs)
    return row | {"runs": len(runs), "wall_s_runs": [r["wall_s"] for r in runs]}


def fit(rows: list[dict]) -> dict:
    """Slopes and intercepts between consecutive sizes, and the extrapolation to ImageNet."""
    n = np.array([r["files"] for r in rows], float)
    wall = np.array([r["wall_s"] for r in rows])
    rss = np.array([r["driver_rss_mb"] for r in rows])
    slopes = [(wall[i + 1] - wall[i]) / (n[i + 1] - n[i]) for i in range(len(n) - 1)]
    per_run = wall[0] - slopes[0] * n[0] if slopes else wall[0]
    growth = (rss[-1] - rss[-2]) / (n[-1] - n[-2]) * 1e5 if len(n) > 1 else 0.0
    last = rows[-1]
    workers = last["workers"]
    slope = slopes[-1] if slopes else wall[0] / n[0]
    worker_s = slope * workers  # worker-seconds per image
    cpu = np.array([r["driver_cpu_s"] for r in rows])
    # the flow process's CPU per image (a slope, like the wall time's): it does not scale out with the workers
    driver_s = (cpu[-1] - cpu[-2]) / (n[-1] - n[-2]) if len(n) > 1 else cpu[-1] / n[-1]
    hours = {str(w): (per_run + IMAGENET_TRAIN * max(worker_s / w, driver_s)) / 3600 for w in sorted({workers, 64})}
    busy = [1e3 * r["busy_s"] / r["files"] for r in rows]
    return {
        "part_work_ms_per_image": busy,
        "part_work_change": busy[-1] / busy[-2] - 1 if len(busy) > 1 else None,
        "slopes_ms_per_image": [1e3 * s for s in slopes],
        "per_run_s": per_run,
        "slope_change": slopes[-1] / slopes[-2] - 1 if len(slopes) > 1 else None,
        "driver_rss_growth_mb_per_100k": growth,
        "driver_cpu_ms_per_image": 1e3 * driver_s,
        "imagenet": {
            "images": IMAGENET_TRAIN,
            "hours": hours,
            "worker_ms_64": 1e3 * worker_s / 64,
            "store_gb": last["store_bytes"] / last["files"] * IMAGENET_TRAIN / 1e9,
            "driver_rss_gb": (rss[-1] + growth * (IMAGENET_TRAIN - n[-1]) / 1e5) / 1024,
        },
    }


def loader_on(store: Path, threads: int) -> dict:
    """The loader's rate on a store in both orders (its files read once first, so that they are in the page
    cache), and the L codec's decode bound, as `benchmarks loader`."""
    from benchmarks import loader

    args = argparse.Namespace(store=str(store), threads=threads, batch=64, batches=100, warmup=10, seed=0)
    loader.warm(store)
    rates = {order: loader.run_child(args, order, seed=0)["images_per_s"] for order in loader.ORDERS}
    return {"threads": threads, "images_per_s": rates, "decode_bound_images_per_s": loader.decode_bound(str(store))}


def plot(path: Path, rows: list[dict]) -> None:
    """Two panels against N: wall time per file (ms) and the driver's and all processes' peak RSS (MB)."""
    from PIL import Image

    from training.plots import chart

    cost = {"wall time per file (ms)": [(r["files"], 1e3 * r["wall_s"] / r["files"]) for r in rows]}
    cost["slope from the size below (ms)"] = [
        (b["files"], 1e3 * (b["wall_s"] - a["wall_s"]) / (b["files"] - a["files"]))
        for a, b in zip(rows, rows[1:], strict=False)
    ]
    rss = {k: [(r["files"], r[k]) for r in rows] for k in ("driver_rss_mb", "all_rss_mb")}
    top, bottom = chart(cost, "flow cost per file against N", "N", log_x=True), chart(rss, "peak RSS (MB)", "N", True)
    img = Image.new("RGB", (top.width, top.height + bottom.height), "white")
    img.paste(top, (0, 0))
    img.paste(bottom, (0, top.height))
    img.save(path)


def main(argv=None) -> int:
    from benchmarks.photos import imagenet_sample
    from pipeline.build import auto_part_images

    p = ArgumentParser(prog="python -m benchmarks scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="numbers of source files, comma-separated")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers of the flow")
    p.add_argument("--sample", help="ImageNet-layout photos to link to (default: the ImageNet sample, if present)")
    p.add_argument("--work", help="folder for the trees and stores (default: a temporary one, removed at the end)")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between two looks at the flow's processes")
    p.add_argument("--rounds", type=int, default=1, help="runs of every size, interleaved; medians are reported")
    p.add_argument("--no-loader", action="store_true", help="skip the loader on the largest store")
    p.add_argument("--out", default="reports/benchmarks")
    args = p.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    sample = Path(args.sample) if args.sample else imagenet_sample()
    if sample is None or not (sample / "train").is_dir():
        p.error("needs ImageNet-layout photos: the ImageNet sample of the development photos, or --sample DIR")
    if sizes[0] < 1 or args.workers < 1 or args.rounds < 1:
        p.error("--sizes, --workers and --rounds must be >= 1")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    try:
        trees = {n: source_tree(sample, work / f"source-{n}", n) for n in sizes}
        for r in range(args.rounds):  # sizes interleaved: machine noise hits every size alike
            for n in sizes:
                store = work / f"store-{n}.zarr"
                shutil.rmtree(store, ignore_errors=True)
                row = {"files": n, "workers": args.workers, "part_images": auto_part_images(n)}
                row |= run_flow(trees[n], store, args.workers, args.poll)
                runs[n].append(row)
                print(
                    f"round {r + 1}, {n:,} files: {row['wall_s']:.1f} s, {1e3 * row['busy_s'] / n:.2f} ms of "
                    f"part work per file, driver {row['driver_rss_mb']:.0f} MB and {row['driver_cpu_s']:.1f} s of "
                    f"CPU, all {row['all_rss_mb']:.0f} MB",
                    flush=True,
                )
        rows = [median_row(runs[n]) for n in sizes]
        loader = None if args.no_loader else loader_on(work / f"store-{sizes[-1]}.zarr", args.workers)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    data = {"rows": rows, "fit": fit(rows), "loader": loader, "goals": GOALS, "machine": machine()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plot(Path(args.out) / "scale.png", rows)
    md = _markdown(data)
    write("scale", data, md, args.out)
    return 0


def _change(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.1f}% ({'met' if abs(x) <= GOALS['slope_flat'] else 'not met'})"


def _markdown(d: dict) -> str:
    rows, f, m = d["rows"], d["fit"], d["machine"]
    workers = rows[-1]["workers"]
    lines = [
        "# The preprocessing flow at scale",
        "",
        f"`python -m flows.preprocess` on trees of hard links to the ImageNet sample's photos, {workers} local Dask "
        f"workers; CPU {m['cpu']}, {m['cores']} cores.",
        "",
        "| files | stored | wall s | ms per file | part work ms per file | driver peak RSS MB | all processes MB "
        "| store GB | driver CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['files']:,} | {r['images']:,} | {r['wall_s']:.1f} | {1e3 * r['wall_s'] / r['files']:.2f} "
            f"| {1e3 * r['busy_s'] / r['files']:.2f} "
            f"| {r['driver_rss_mb']:.0f} | {r['all_rss_mb']:.0f} "
            f"| {r['store_bytes'] / 1e9:.2f} | {r['driver_cpu_s']:.1f} |"
        )
    slopes = ", ".join(f"{s:.3f}" for s in f["slopes_ms_per_image"])
    change, work = f["slope_change"], f["part_work_change"]
    im = f["imagenet"]
    lines += [
        "",
        f"- cost per image (slope between consecutive sizes): {slopes} ms; per run {f['per_run_s']:.1f} s",
        f"- per-image cost, largest size against the one below (goal: flat within +-"
        f"{100 * GOALS['slope_flat']:.0f}%): the wall-time slope {_change(change)}; the part tasks' own work per "
        f"file {_change(work)}",
        f"- driver RSS growth: {f['driver_rss_growth_mb_per_100k']:.0f} MB per 100,000 files; "
        f"the flow process's own CPU: {f['driver_cpu_ms_per_image']:.3f} ms per file (the slope between the two "
        "largest sizes)",
        "",
        f"## ImageNet-1k train ({im['images']:,} files), extrapolated",
        "",
        "| | value |",
        "|---|---|",
    ]
    for w, h in im["hours"].items():
        lines.append(f"| wall time on {w} workers | {h:.1f} h ({60 * h:.0f} min) |")
    rss_ok = "met" if im["driver_rss_gb"] <= GOALS["driver_rss_gb"] else "not met"
    lines += [
        f"| store | {im['store_gb']:.1f} GB |",
        f"| driver peak RSS | {im['driver_rss_gb']:.2f} GB (goal <= {GOALS['driver_rss_gb']:.0f} GB: {rss_ok}) |",
        "",
        "64 workers: the per-image cost spread over them, but never below the flow process's own CPU per image "
        "(it writes no image data: the parts write their own shards), plus the per-run cost; a model, not a "
        f"measurement. Per image on 64 workers: {im['worker_ms_64']:.3f} ms of the workers' time against "
        f"{f['driver_cpu_ms_per_image']:.3f} ms of the flow process's CPU: bounded by "
        f"{'the flow process' if f['driver_cpu_ms_per_image'] > im['worker_ms_64'] else 'the workers'}.",
    ]
    if d["loader"]:
        lo = d["loader"]
        rates = ", ".join(f"`{o}` {v:.0f}" for o, v in lo["images_per_s"].items())
        lines += [
            "",
            f"Loader on the largest store, {lo['threads']} threads: {rates} images/s "
            f"(decode bound {lo['decode_bound_images_per_s'] * lo['threads']:.0f}).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
