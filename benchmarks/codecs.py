"""L's codec: size, encode and decode time of `colorize.med_rans` against Zarr v3's own zstd, side by side.

Images are L of a store (or of the sample's photos when no store is given). Each codec encodes and decodes them
with the store's own chain (`pipeline.store.arrays.ArrayCodecs`, which the writer and reader both use), on one
thread; rounds are interleaved so that machine noise hits every codec alike. `flows.preprocess --l-codec`
picks the codec; docs/store.md gives the trade-off.
"""

import statistics
import time

import numpy as np

from benchmarks.report import machine, named, write
from pipeline.common.cli import ArgumentParser

IMAGENET_TRAIN = 1_281_167
READERS = {
    "med_rans": "zarr-python with this package installed (a registered codec)",
    "zstd": "any Zarr v3 reader: zarr-python, tensorstore (tested), zarrs, ...",
}


def sample_L(store: str | None, n: int) -> np.ndarray:
    """uint8 (n, S, S): L of the first n images of `store`, or of the sample's photos at 224."""
    if store:
        from pipeline.store.reader import ShardReader

        reader = ShardReader(store, names=("L",))
        return reader.read(np.arange(min(n, reader.n)))["L"]
    from benchmarks.photos import photo_batch
    from kernels import image_targets

    return image_targets(photo_batch(n, 224, seed=0)[0])[0]


def codecs(levels: list[int]) -> dict:
    """name -> (encode(image) -> chunk bytes, decode(chunk, out) -> None): the store's own chain, both ways."""
    import zstandard

    from pipeline.store.arrays import ArrayCodecs

    def both(c: ArrayCodecs):
        zstd = zstandard.ZstdDecompressor()
        return c.encode, lambda chunk, out: c.decode(memoryview(chunk), out, zstd)

    chains = {"med_rans": ArrayCodecs("uint8", 1, image=True)}
    chains |= {f"zstd {lvl}": ArrayCodecs("uint8", lvl) for lvl in levels}
    return {name: both(c) for name, c in chains.items()}


def measure(L: np.ndarray, levels: list[int], rounds: int) -> dict:
    found: dict[str, dict] = {}
    out = np.empty_like(L[0])
    for encode, decode in codecs(levels).values():  # compiled and warm before timing
        decode(encode(L[0]), out)
    for _ in range(rounds):
        for name, (encode, decode) in codecs(levels).items():
            t0 = time.perf_counter()
            chunks = [encode(x) for x in L]
            t1 = time.perf_counter()
            for c, x in zip(chunks, L, strict=True):
                decode(c, out)
                if not np.array_equal(out, x):
                    raise AssertionError(f"{name} does not round-trip")
            t2 = time.perf_counter()
            row = found.setdefault(name, {"encode_ms": [], "decode_ms": []})
            row["bytes_per_image"] = float(np.mean([len(c) for c in chunks]))
            row["encode_ms"].append((t1 - t0) / len(L) * 1e3)
            row["decode_ms"].append((t2 - t1) / len(L) * 1e3)
    for row in found.values():
        row["encode_ms"] = statistics.median(row["encode_ms"])
        row["decode_ms"] = statistics.median(row["decode_ms"])
        row["decode_images_per_s_per_thread"] = 1e3 / row["decode_ms"]
        row["imagenet_L_gb"] = row["bytes_per_image"] * IMAGENET_TRAIN / 1e9
    return found


def markdown(data: dict) -> str:
    base = data["codecs"]["med_rans"]
    lines = [
        "# L's codec: size, speed and who can read it",
        "",
        f"{data['images']} images of L ({data['source']}), S = {data['size']}; one thread, medians of "
        f"{data['rounds']} interleaved rounds. CPU: {data['machine']['cpu']}, {data['machine']['cores']} cores.",
        "",
        "| codec | kB per image | vs med_rans | encode ms | decode ms | decodes/s per thread | L of ImageNet train"
        " | readers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["codecs"].items():
        lines.append(
            f"| `{name}` | {r['bytes_per_image'] / 1e3:.1f} | {r['bytes_per_image'] / base['bytes_per_image']:.2f}x"
            f" | {r['encode_ms']:.3f} | {r['decode_ms']:.3f} | {r['decode_images_per_s_per_thread']:,.0f}"
            f" | {r['imagenet_L_gb']:.1f} GB | {READERS[name.split()[0]]} |"
        )
    lines += ["", "`--l-codec zstd` uses `--zstd-level` (default 1) for L as for the other arrays.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m benchmarks codecs", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="a store whose L to use (default: the sample's photos at 224)")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--levels", default="1,3,9,19", help="zstd levels")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="reports/benchmarks")
    args = p.parse_args(argv)
    L = sample_L(args.store, args.images)
    levels = [int(v) for v in args.levels.split(",") if v]
    data = {
        "codecs": measure(L, levels, args.rounds),
        "images": len(L),
        "size": L.shape[-1],
        "source": named(args.store) or "the sample's photos",
        "rounds": args.rounds,
        "machine": machine(),
    }
    write("codecs", data, markdown(data), args.out)
    return 0
