"""The preprocessing benchmark's report (`benchmarks.flow`): rates, costs per image and per run, and markdown.

Apart from the runs that measure, so that what the report derives from the timings (the slopes between the two
sizes, the ratios it is held to) reads as one piece.
"""

from typing import TYPE_CHECKING

import numpy as np

from benchmarks.report import machine, named, summary

if TYPE_CHECKING:
    from benchmarks.flow import Workload


def results(args, w: "Workload", times: dict, counts: dict) -> dict:
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


def markdown(d: dict) -> str:
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
