"""Training input: images/s of the loader on a store, against the L codec's decode bound and zarr-python.

In interleaved rounds, each measured in this run:
  bound   the L codec (`colorize.med_rans`) decoding chunks already in memory on one thread, times --threads:
          what the loader's threads could reach if they did nothing but decode L;
  random  `training.data.Loader` in the `random` order, --threads threads, in a fresh process (its peak RSS is
          the loader's), the first --warmup batches untimed, read from the shard files (never held in memory);
  quasi   the same in the `quasi` order;
  zarr    plain zarr-python reading random batches (sorted indices, `oindex`, one call per array), as the
          loader did before it read the shard files itself.
The store is read once before the rounds so that it sits in the page cache (`page_cache` in the report says
whether it fits); with --cold, each order also runs once after `posix_fadvise(DONTNEED)` on every file of the
store, which drops its clean pages from the cache: the rate of a store read from the disk.

With --store URL (a store in an object store), each round also runs the loader on the bucket in both orders,
cold (an empty --cache-dir) and warm (the cache the cold random run filled), with --latency-ms added to every
request by a proxy on 127.0.0.1 (`benchmarks.netproxy`) in front of AWS_ENDPOINT_URL; the local measurements
above run on a copy of the store downloaded first. The report gains `remote`, `local`, `latency_ms`.

The report's targets and its markdown are `benchmarks.loader_report`.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.loader_report import markdown
from benchmarks.report import machine, settings, write
from pipeline.common.cli import ArgumentParser, Refused
from pipeline.storage import location
from training.order import ORDERS


def store_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()]


def warm(store: Path) -> None:
    """Read every file of the store once, so that its pages are in the page cache (if they fit)."""
    for p in store_files(store):
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


def drop_cache(store: Path) -> None:
    """Ask the kernel to drop the store's (clean) pages from the page cache."""
    for p in store_files(store):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def decode_bound(store: str, images: int = 512, seed: int = 0) -> float:
    """Single-thread decode rate (images/s) of the store's L chunks, read into memory first: the reader's own
    decode (crc32c check, then `colorize.med_rans` or zstd, whichever the store's L uses)."""
    from pipeline.store.reader import ShardReader

    reader = ShardReader(store, names=("L",))
    idx = np.sort(np.random.default_rng(seed).choice(reader.n, min(images, reader.n), replace=False))
    fetched, out = reader.fetch(idx), reader.empty(len(idx))
    reader.decode(fetched, np.arange(1), out)  # compiled or loaded from Numba's cache before timing
    t0 = time.perf_counter()
    reader.decode(fetched, np.arange(len(idx)), out)
    return len(idx) / (time.perf_counter() - t0)


def zarr_rate(store: str, batch: int, batches: int, seed: int) -> float:
    """images/s of random batches read with zarr-python (sorted indices, one `oindex` call per array)."""
    from pipeline.store.format import image_slots, open_store

    group = open_store(store)
    slots = image_slots(group)
    n = len(slots)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = np.sort(rng.choice(n, batch, replace=False))
        for name in ("L", "bins", "label"):
            np.asarray(group[name].oindex[slots[idx]])
    return batches * batch / (time.perf_counter() - t0)


def child(args) -> dict:
    """Run in a fresh process: the loader alone, its rate after --warmup batches and this process's peak RSS."""
    from pipeline.store.cache import ShardCache
    from training.data import DataConfig, Loader, StoreData

    t0 = time.perf_counter()
    cache = ShardCache(args.cache_dir, 1 << 40, args.store) if args.cache_dir else None
    data = StoreData(args.store, threads=args.threads, cache_bytes=0, shard_cache=cache)  # from the shard files
    cfg = DataConfig(batch_size=args.batch, order=args.order, loader_threads=args.threads, seed=args.seed)
    loader = Loader(data, cfg)
    opened = time.perf_counter() - t0
    count, epoch, t_start = 0, 0, None
    if args.warmup == 0:  # a cold start is timed from the first batch, with the L codec's kernel loaded first
        from kernels import lossless

        lossless.decode(lossless.encode(np.zeros((8, 8), np.uint8)), 8, 8)
        t_start = time.perf_counter()
    while count < args.warmup + args.batches:
        for _ in loader.epoch(epoch):
            count += 1
            if count == args.warmup:
                t_start = time.perf_counter()
            if count >= args.warmup + args.batches:
                break
        epoch += 1
    seconds = time.perf_counter() - (t_start or t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images_per_s": args.batches * args.batch / seconds, "peak_rss_mb": rss, "open_s": opened}


def run_child(args, order: str, seed: int, store: str | None = None, cache_dir: str = "", env=None,
              warmup: int | None = None) -> dict:  # fmt: skip
    """The loader in a fresh process; warmup 0: timed from its first batch (a cold start)."""
    cmd = [sys.executable, "-m", "benchmarks.loader", "--child", "--store", store or args.store, "--order", order]
    cmd += ["--threads", str(args.threads), "--batch", str(args.batch), "--batches", str(args.batches)]
    cmd += ["--warmup", str(args.warmup if warmup is None else warmup), "--seed", str(seed)]
    cmd += ["--cache-dir", cache_dir] if cache_dir else []
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"the loader failed on {store or args.store}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def download(url: str, folder: Path) -> Path:
    """A local copy of the store at url."""
    from pipeline.storage import location

    root = location(url)
    for f in root.walk_files():
        dst = folder / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(f.read_bytes())
    return folder


@contextlib.contextmanager
def proxied(latency_ms: float):
    """The environment of the loader's processes: AWS_ENDPOINT_URL behind a proxy that adds latency_ms."""
    from urllib.parse import urlsplit

    from benchmarks.netproxy import LatencyProxy

    if not latency_ms:
        yield dict(os.environ)
        return
    endpoint = urlsplit(os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint.scheme != "http" or not endpoint.port:
        raise Refused("--latency-ms needs AWS_ENDPOINT_URL=http://HOST:PORT, a local S3 server to put a proxy before")
    proxy = LatencyProxy((endpoint.hostname, endpoint.port), latency_ms)
    try:
        yield dict(os.environ) | {"AWS_ENDPOINT_URL": proxy.endpoint}
    finally:
        proxy.stop()


def remote_round(args, r: int, env: dict, tmp: Path) -> dict:
    """One round on the bucket: each order cold (an empty cache), then warm (the first cold run's cache)."""
    row, warm_dir = {}, tmp / f"cache-{r}"
    for k, order in enumerate(args.orders):
        cold_dir = warm_dir if k == 0 else tmp / f"cache-{r}-{order}"
        row[f"{order}_cold"] = run_child(args, order, r, args.url, str(cold_dir), env, warmup=0)
    for order in args.orders:
        row[f"{order}_warm"] = run_child(args, order, r, args.url, str(warm_dir), env)
    for folder in tmp.glob(f"cache-{r}*"):
        shutil.rmtree(folder, ignore_errors=True)
    return row


def measure(args, remote=None) -> dict:
    """The local measurements; remote(r): the bucket's round r, run after the local one (interleaved)."""
    store = Path(args.store)
    from pipeline.store.format import open_store

    n = int(open_store(store).attrs["n_images"])
    nbytes = sum(p.stat().st_size for p in store_files(store))
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    warm(store)
    rounds: list[dict] = []
    for r in range(args.rounds):  # interleaved: machine noise hits every measurement alike
        row = {"bound_1_thread": decode_bound(args.store, seed=r)}
        for order in args.orders:
            row[order] = run_child(args, order, seed=r)
        row["zarr_python"] = zarr_rate(args.store, args.batch, args.zarr_batches, seed=r)
        row |= remote(r) if remote else {}
        rounds.append(row)
        print(
            f"round {r + 1}: "
            + ", ".join(f"{k} {v['images_per_s'] if isinstance(v, dict) else v:.0f}" for k, v in row.items()),
            flush=True,
        )
    cold = {}
    if args.cold:
        for order in args.orders:
            drop_cache(store)
            cold[order] = run_child(args, order, seed=0)["images_per_s"]
    med = statistics.median
    bound = med(r["bound_1_thread"] for r in rounds) * args.threads
    rates = {o: med(r[o]["images_per_s"] for r in rounds) for o in args.orders}
    zarr = med(r["zarr_python"] for r in rounds)
    children = [v for r in rounds for v in r.values() if isinstance(v, dict)]
    extra = {}
    if remote:
        keys = [f"{o}_{w}" for w in ("cold", "warm") for o in args.orders]
        extra = {"remote": {k: med(r[k]["images_per_s"] for r in rounds) for k in keys}, "local": rates}
        extra |= {"latency_ms": args.latency_ms, "url": args.url}
    return extra | {
        "images_per_s": rates,
        "decode_bound_images_per_s": bound,
        "threads": args.threads,
        "store_images": n,
        "store_bytes": nbytes,
        "peak_rss_mb": max(c["peak_rss_mb"] for c in children),
        "zarr_python_images_per_s": zarr,
        "fraction_of_bound": {o: rates[o] / bound for o in args.orders},
        "over_zarr_python": {o: rates[o] / zarr for o in args.orders},
        "cold_images_per_s": cold or None,
        "page_cache": {"store_bytes": nbytes, "available_bytes": available, "fits": nbytes < available},
        "settings": settings(args, ("store", "batch", "batches", "warmup", "rounds", "zarr_batches")),
        "rounds": rounds,
        "machine": machine(),
    }


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m benchmarks loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="a finished store")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="loader threads (default: every core)")
    p.add_argument("--order", choices=(*ORDERS, "both"), default="both")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=150, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--zarr-batches", type=int, default=4, help="random batches read with zarr-python per round")
    p.add_argument("--cold", action="store_true", help="also measure with the store dropped from the page cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/benchmarks")
    p.add_argument("--latency-ms", type=float, default=0.0, help="a store URL: add this to every request (a proxy)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or args.batch < 1 or args.batches < 1 or args.rounds < 1:
        p.error("--threads, --batch, --batches and --rounds must be >= 1")
    if not (location(args.store) / "zarr.json").is_file():
        p.error(f"no store at {args.store}")
    from pipeline.store.format import open_store

    n = int(open_store(args.store).attrs["n_images"])
    if n < args.batch:
        p.error(f"{args.store} holds {n} images, fewer than a batch of {args.batch}: give a smaller --batch")
    if args.child:
        print(json.dumps(child(args)))
        return 0
    args.orders = tuple(ORDERS) if args.order == "both" else (args.order,)
    if location(args.store).local:  # a local store is measured where it is; a bucket's on a downloaded copy too
        data = measure(args)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp, proxied(args.latency_ms) as env:
            args.url, args.store = args.store, str(download(args.store, Path(tmp) / "local.zarr"))
            data = measure(args, lambda r: remote_round(args, r, env, Path(tmp)))
    md = markdown(data)
    write("loader", data, md, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
