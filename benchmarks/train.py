"""Training throughput of every registered model, their FLOPs, the matmul peak and the loader, in one run.

Measured side by side:
  (1) train-step throughput (images/s) of every registered model with its own loss and optimiser: the step
      training runs (`training.trainer.train_step`; for a GAN, its discriminator's step too) on a fixed synthetic
      batch already on the device (channels_last and bf16 autocast on CUDA, fp32 on the CPU).
      Models are interleaved step by step after a warm-up, so that machine noise hits all alike; the
      median seconds per step is reported. Defaults: batch 64 at 224 x 224, width 1 (the paper's) on CUDA;
      width 1/8, 96 x 96, batch 16 on the CPU, where the paper-size model runs at ~0.3 images/s.
  (2) forward FLOPs per image (torch.utils.flop_counter: 2 per multiply-add, convolutions and matmuls
      only) at the benchmark's width and size and at the paper's (width 1, 224), counted on the meta
      device, and parameters; the device's matmul peak (bf16 8192^3 on CUDA, fp32 2048^3 on the CPU) and
      the fraction of it a training step achieves, taking a step as 3x the forward FLOPs.
  (3) the loader alone (training.data.Loader over --store, default data/stores/embedded-train.zarr when it
      exists, its batches moved to the device as training does): images/s for batches of the same size, and its
      ratio to the model's rate for `full`.
"""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import machine, named, summary, write
from kernels.gamut import Q
from pipeline.common.cli import ArgumentParser
from training.config import TrainConfig
from training.models import MODELS, N_CLASSES, count_parameters, create_model, spec_of
from training.trainer import Run, networks, train_step

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = ROOT / "data" / "stores" / "embedded-train.zarr"
DEFAULTS = {"cpu": {"width": 0.125, "size": 96, "batch": 16, "steps": 5}, "cuda": {"width": 1.0, "size": 224}}
DEFAULTS["cuda"] |= {"batch": 64, "steps": 20}
PAPER = {"width": 1.0, "size": 224}
GOAL = "Goal on one H100: >= 1000 images/s for full in bf16 (>= 40% of peak); loader >= 3x the model's rate"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(variant: str, width: float, size: int) -> tuple[float, int]:
    """(forward FLOPs of one image, parameters), counted on the meta device: nothing is computed."""
    with torch.device("meta"):
        model = create_model(variant, width).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 1, size, size, device="meta"))
    return float(counter.get_total_flops()), count_parameters(model)


def matmul_peak(device: torch.device) -> dict:
    """Best FLOP/s of square matmuls: bf16 8192 on CUDA, fp32 2048 on the CPU."""
    n, dtype, inner = (8192, torch.bfloat16, 10) if device.type == "cuda" else (2048, torch.float32, 2)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = a @ b
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        _sync(device)
        times.append((time.perf_counter() - t0) / inner)
    label = f"{str(dtype).removeprefix('torch.')} matmul {n}x{n}" + (" (CPU)" if device.type == "cpu" else "")
    return {"flops_per_s": 2 * n**3 / min(times), "label": label}


def train_rates(args, device: torch.device, weights: np.ndarray) -> dict[str, list[float]]:
    """Seconds per training step (`training.trainer.train_step`: a GAN's discriminator step included) of every
    registered model, interleaved across rounds after `warmup` rounds."""
    B, S = args.batch, args.size
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format  # as training.run
    batch = {
        "L": torch.rand(B, 1, S, S, generator=g).to(device).contiguous(memory_format=fmt),
        "q": torch.randint(0, Q, (B, S // 4, S // 4), generator=g).to(device),
        "label": torch.randint(0, N_CLASSES, (B,), generator=g).to(device),
    }
    runs = {}
    for name in MODELS:
        torch.manual_seed(0)
        cfg = TrainConfig(
            store="-", out=tempfile.mkdtemp(), variant=name, width=args.width, size=S, compile=args.compile
        )
        nets = networks(cfg, device, weights, N_CLASSES, torch.compile if args.compile else None)
        runs[name] = Run(cfg, spec_of(name), 0, 1, device, None, None, size=0, crop=0, total=1, **nets)
    times = {v: [] for v in MODELS}
    for r in range(args.warmup + args.steps):
        for name, run in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            train_step(run, batch)
            _sync(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def loader_rate(store: str, batch: int, size: int, n_batches: int, device: torch.device, threads: int) -> dict:
    """images/s of training.data.Loader over `store` with its batches moved to `device` (`on_device`, as training
    does), `n_batches` batches, wrapping epochs."""
    from training.data import DataConfig, Loader, StoreData, on_device

    data = StoreData(store, threads=threads)
    size = size if size != data.S else 0
    loader = Loader(data, DataConfig(batch_size=batch, loader_threads=threads), pin=device.type == "cuda")
    count, epoch = 0, 0
    t0 = time.perf_counter()
    while count < n_batches:
        for _ in on_device(loader.epoch(epoch), device, size):
            count += 1
            if count >= n_batches:
                break
        epoch += 1
    _sync(device)
    seconds = time.perf_counter() - t0
    info = {"store": named(store), "store_size": data.S, "images": int(data.n), "in_memory": data.in_memory}
    info |= {"threads": loader.threads}
    return info | {"batches": count, "seconds": seconds, "images_per_s": count * batch / seconds}


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, help="channel multiplier (default: 1 on CUDA, 0.125 on CPU)")
    parser.add_argument("--size", type=int, help="image side, a multiple of 32 (default: 224 on CUDA, 96 on CPU)")
    parser.add_argument("--batch", type=int, help="batch size (default: 64 on CUDA, 16 on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default: 20 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--store", help=f"store for the loader measurement (default: {DEFAULT_STORE} if present)")
    parser.add_argument("--loader-batches", type=int, default=30, help="batches the loader is timed over")
    parser.add_argument("--loader-threads", type=int, default=0, help="loader threads (default: cores less one)")
    parser.add_argument("--out", default="reports/benchmarks")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    for key, value in DEFAULTS[device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size % 32 or args.size < 32:
        parser.error(f"--size must be a positive multiple of 32, got {args.size}")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--batch and --steps must be >= 1, --warmup >= 0")
    store = args.store or (str(DEFAULT_STORE) if (DEFAULT_STORE / "zarr.json").is_file() else None)
    if args.store and not Path(args.store).exists():
        parser.error(f"no store at {args.store}")

    weights = np.ones(Q, np.float32)  # the values do not change the work of a step
    times = train_rates(args, device, weights)
    peak = matmul_peak(device)
    variants = {}
    for v in MODELS:
        flops, params = forward_flops(v, args.width, args.size)
        paper_flops, paper_params = forward_flops(v, PAPER["width"], PAPER["size"])
        ips = args.batch / statistics.median(times[v])
        variants[v] = {"params": params, "fwd_flops_per_image": flops, **summary(times[v]), "images_per_s": ips}
        variants[v] |= {"fraction_of_peak": 3 * flops * ips / peak["flops_per_s"]}
        variants[v] |= {"paper_params": paper_params, "paper_fwd_flops_per_image": paper_flops}
    loader = (
        loader_rate(store, args.batch, args.size, args.loader_batches, device, args.loader_threads) if store else None
    )
    mach = machine()
    data = {
        "device": mach["gpu"] if device.type == "cuda" else f"CPU: {mach['cpu']}",
        "machine": mach,
        "settings": {k: getattr(args, k) for k in ("width", "size", "batch", "steps", "warmup", "compile")}
        | {"precision": "bf16 autocast" if device.type == "cuda" else "fp32", "channels_last": device.type == "cuda"},
        "paper_size": PAPER,
        "variants": variants,
        "peak": peak,
        "loader": loader,
        "loader_over_full": loader["images_per_s"] / variants["full"]["images_per_s"] if loader else None,
        "goal": GOAL,
    }
    md = _markdown(data, device.type)
    write("train", data, md, args.out)
    return 0


def _markdown(d: dict, kind: str) -> str:
    s, v, peak = d["settings"], d["variants"], d["peak"]
    lines = [
        "# Training throughput: every registered model, its own loss",
        "",
        f"Device: {d['device']}; {s['precision']}, channels_last {s['channels_last']}, compile {s['compile']}.",
        f"Benchmark size: width {s['width']}, {s['size']} x {s['size']}, batch {s['batch']}; median of "
        f"{s['steps']} interleaved steps per variant after {s['warmup']} warm-up.",
        "",
        "| variant | params M | GFLOP/img fwd | images/s | ms/step | % of peak | paper: params M | paper: GFLOP/img |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in v.items():
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f} | {r['fwd_flops_per_image'] / 1e9:.3f} | {r['images_per_s']:.1f} "
            f"| {r['median_s'] * 1e3:.1f} | {100 * r['fraction_of_peak']:.1f} | {r['paper_params'] / 1e6:.1f} "
            f"| {r['paper_fwd_flops_per_image'] / 1e9:.1f} |"
        )
    full, loader = v["full"], d["loader"]
    lines += [
        "",
        f"- paper size (width 1, 224 x 224), `full`: {full['paper_params'] / 1e6:.1f} M parameters, "
        f"{full['paper_fwd_flops_per_image'] / 1e9:.1f} GFLOP forward per image (~"
        f"{3 * full['paper_fwd_flops_per_image'] / 1e9:.0f} GFLOP per training image)",
        f"- peak ({peak['label']}): {peak['flops_per_s'] / 1e12:.3f} TFLOP/s; `full` reaches "
        f"{100 * full['fraction_of_peak']:.1f}% of it (3 x forward FLOPs x images/s / peak)",
        "- loader: "
        + (
            f"{loader['images_per_s']:.0f} images/s over {loader['batches']} batches of {loader['store']} "
            f"(stored at {loader['store_size']}, in memory {loader['in_memory']}, {loader['threads']} threads, "
            f"batches moved to the device); "
            f"**{d['loader_over_full']:.1f}x** the rate of `full` (goal >= 3x)"
            if loader
            else "not measured (no store: give --store or build data/stores/embedded-train.zarr)"
        ),
        "",
        f"{GOAL}.",
    ]
    if kind == "cuda":
        ok = full["images_per_s"] >= 1000 and (not loader or d["loader_over_full"] >= 3)
        lines.append(
            f"GPU: `full` {full['images_per_s']:.0f} images/s at {100 * full['fraction_of_peak']:.1f}% of the "
            f"measured peak at this size -- {'met' if ok else 'not met'}."
        )
    else:
        lines.append("GPU: not measured (no GPU here); the figures above are the CPU's.")
    lines += ["", "FLOPs count convolutions and matmuls only (FlopCounterMode, 2 per multiply-add).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
