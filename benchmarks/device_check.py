"""Every GPU check in one run, well inside 8 minutes: `python -m benchmarks.device_check [--store S] [--out DIR]`.

  kernels  the torch path (`kernels.torch_ops`) on the device against the CPU kernels on all 2^24 colours:
           categories of every 8-bit colour, and of every colour's float Lab (a, b);
  dali     DALI "mixed" (nvJPEG) crops against the "cpu" crops of the sample's photos: identical pixels, mean
           and largest difference, identical bins, and each decoder's images/s;
  train    `benchmarks train` on the device (`full` and the other variants at 224, batch 64, bf16): images/s and
           the fraction of the measured bf16 matmul peak, with the loader over --store beside it;
  loader   `training.data.Loader` over --store feeding the device (`on_device`): images/s in both orders.
A part that cannot run says why ("not measured: ..."): no CUDA device, a package missing, no store. With
--device cpu every part runs on the CPU instead, so that the script itself is tested where there is no GPU.
A part whose packages are missing (DALI for `dali`; zarr, zstandard and google-crc32c for `loader`) reports
"not measured" and the others run. Writes reports/benchmarks/device_check.*.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import machine, write
from pipeline.common.cli import ArgumentParser


class NotMeasured(Exception):
    """A part that cannot run here, with the reason."""


def check_kernels(device) -> dict:
    import torch

    import kernels

    idx = np.arange(1 << 24, dtype=np.int64)
    rgb = np.stack([idx >> 16, (idx >> 8) & 255, idx & 255], axis=-1).astype(np.uint8)
    t0 = time.perf_counter()
    q_cpu = kernels.encode_bins(rgb)
    cpu_s = time.perf_counter() - t0
    rgb_t = torch.from_numpy(rgb).to(device)
    kernels.encode_bins(rgb_t[:1024])  # tables copied to the device once
    _sync(device)
    t0 = time.perf_counter()
    q_dev = kernels.encode_bins(rgb_t)
    _sync(device)
    dev_s = time.perf_counter() - t0
    ab = np.ascontiguousarray(kernels.rgb_to_lab(rgb)[:, 1:].astype(np.float64))
    q_ab_cpu = kernels.encode_ab(ab)
    q_ab_dev = kernels.encode_ab(torch.from_numpy(ab).to(device)).cpu().numpy()
    return {
        "colours": len(rgb),
        "bins_differ": int(np.count_nonzero(q_dev.cpu().numpy() != q_cpu)),
        "float_bins_differ": int(np.count_nonzero(q_ab_dev != q_ab_cpu)),
        "cpu_s": cpu_s,
        "device_s": dev_s,
    }


def check_dali(device, sample: Path | None, images: int) -> dict:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise NotMeasured("DALI is not installed") from e
    if sample is None:
        raise NotMeasured("no photos (the ImageNet sample of the development photos, or --sample)")
    import kernels
    from pipeline.decode import Cropper

    blobs = [p.read_bytes() for p in sorted((sample / "train").glob("*/*"))[:images]]
    out, rates = {}, {}
    for name in ("cpu", "mixed" if device.type == "cuda" else "cpu"):
        cropper = Cropper(224, 64, name, threads=4)
        cropper.crops(blobs[:64])  # pipeline built and warm
        t0 = time.perf_counter()
        out[name] = cropper.crops(blobs)
        rates[name] = len(blobs) / (time.perf_counter() - t0)
    other = "mixed" if "mixed" in out else "cpu"
    pairs = [(a[0], b[0]) for a, b in zip(out["cpu"], out[other], strict=True) if a[0] is not None and b[0] is not None]
    diff = np.concatenate([np.abs(a.astype(np.int16) - b).ravel() for a, b in pairs])
    bins_same = np.mean(
        [np.array_equal(kernels.image_targets(a[None])[1], kernels.image_targets(b[None])[1]) for a, b in pairs]
    )
    return {
        "compared": other,
        "images": len(pairs),
        "identical_images": int(sum(np.array_equal(a, b) for a, b in pairs)),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": int(diff.max()),
        "identical_bins_fraction": float(bins_same),
        "images_per_s": rates,
    }


def check_train(device, store: str | None, out: Path, quick: bool) -> dict:
    import json

    from benchmarks import train

    argv = ["--device", device.type, "--out", str(out)]
    if quick:
        argv += ["--width", "0.125", "--size", "64", "--batch", "2", "--steps", "1", "--warmup", "1"]
    if store:
        argv += ["--store", store, "--loader-batches", "4" if quick else "50"]
    train.main(argv)
    d = json.loads((out / "train.json").read_text())
    full = d["variants"]["full"]
    return {
        "settings": d["settings"],
        "full_images_per_s": full["images_per_s"],
        "full_fraction_of_peak": full["fraction_of_peak"],
        "peak": d["peak"],
        "variants_images_per_s": {k: v["images_per_s"] for k, v in d["variants"].items()},
        "loader_images_per_s": d["loader"]["images_per_s"] if d["loader"] else None,
    }


def check_loader(device, store: str | None, batches: int) -> dict:
    if not store:
        raise NotMeasured("no store (give --store)")
    from training.data import DataConfig, Loader, StoreData, on_device

    data = StoreData(store, cache_bytes=0)
    rates = {}
    for order in ("random", "quasi"):
        loader = Loader(data, DataConfig(batch_size=64, order=order), pin=device.type == "cuda")
        count, epoch = 0, 0
        t0 = time.perf_counter()
        while count < batches:
            for _ in on_device(loader.epoch(epoch), device):
                count += 1
                if count == batches:
                    break
            epoch += 1
        _sync(device)
        rates[order] = count * 64 / (time.perf_counter() - t0)
    return {"threads": loader.threads, "images_per_s": rates, "store_images": data.n}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    import torch

    from benchmarks.photos import imagenet_sample

    p = ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="a store for the loader (the sample's is 21 MB)")
    p.add_argument("--sample", help="ImageNet-layout photos for DALI (default: the ImageNet sample, if present)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: run every part on the CPU")
    p.add_argument("--images", type=int, default=800, help="photos decoded by each DALI decoder")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test of this script)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds after which the remaining parts are skipped")
    p.add_argument("--out", default="reports/benchmarks")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sample = Path(args.sample) if args.sample else imagenet_sample()
    work = Path(tempfile.mkdtemp(prefix="device-check-"))
    parts = {
        "kernels": lambda: check_kernels(device),
        "dali": lambda: check_dali(device, sample, 64 if args.quick else args.images),
        "train": lambda: check_train(device, args.store, work, args.quick),
        "loader": lambda: check_loader(device, args.store, 4 if args.quick else 100),
    }
    t_start, results = time.perf_counter(), {}
    for name, run in parts.items():
        t0 = time.perf_counter()
        if device.type == "cuda" and not torch.cuda.is_available():
            results[name] = {"not_measured": "no CUDA device"}
        elif t0 - t_start > args.budget:
            results[name] = {"not_measured": f"over the {args.budget:.0f} s budget"}
        else:
            try:
                results[name] = run() | {"seconds": time.perf_counter() - t0}
            except (NotMeasured, ImportError) as e:
                results[name] = {"not_measured": str(e)}
        print(f"{name}: {results[name]}", flush=True)
    data = {"device": str(device), "results": results, "seconds": time.perf_counter() - t_start, "machine": machine()}
    write("device_check", data, _markdown(data), args.out)
    return 0


def _markdown(d: dict) -> str:
    lines = [f"# Device check ({d['device']}, {d['machine']['gpu'] or d['machine']['cpu']})", ""]
    for name, r in d["results"].items():
        if "not_measured" in r:
            lines.append(f"- **{name}**: not measured ({r['not_measured']})")
            continue
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
        lines.append(f"- **{name}**: {shown}")
    lines += ["", f"{d['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
