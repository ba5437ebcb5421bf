"""The loader benchmark's report (`benchmarks.loader`): its targets, each said met or not, and its markdown.

Apart from the measurements so that what the figures are held to can be read, and changed, in one place.
"""

TARGETS = {"random": 0.75, "quasi": 0.85}  # of the decode bound
TARGET_OVER_ZARR, TARGET_RSS_MB, TARGET_ABSOLUTE = 10.0, 1500.0, (2700.0, 2000.0)  # bound >= 2700: random >= 2000


def markdown(d: dict) -> str:
    bound, rates, s = d["decode_bound_images_per_s"], d["images_per_s"], d["settings"]
    lines = [
        "# Loader: images/s from the store against the decode bound",
        "",
        f"Store {d.get('url', s['store'])}: {d['store_images']:,} images, {d['store_bytes'] / 1e9:.2f} GB "
        f"({'in the page cache' if d['page_cache']['fits'] else 'larger than the free memory'}"
        f"{'; measured locally on a downloaded copy' if 'url' in d else ''}). "
        f"{d['threads']} threads, batches of {s['batch']}, {s['batches']} timed batches after {s['warmup']}; "
        f"medians of {s['rounds']} interleaved rounds. CPU: {d['machine']['cpu']}, {d['machine']['cores']} cores.",
        "",
        "| | images/s | of the decode bound | over zarr-python | target |",
        "|---|---|---|---|---|",
        f"| decode bound (L codec, 1 thread x {d['threads']}) | {bound:.0f} | 1.00 | | |",
    ]
    for o, rate in rates.items():
        lines.append(
            f"| loader, `{o}` | **{rate:.0f}** | **{d['fraction_of_bound'][o]:.2f}** | {d['over_zarr_python'][o]:.1f}x "
            f"| >= {TARGETS[o]:.2f} of the bound{', >= 10x zarr' if o == 'random' else ''} |"
        )
    lines.append(f"| zarr-python, random batches | {d['zarr_python_images_per_s']:.0f} | | 1.0x | |")
    lines += ["", f"- loader peak RSS: {d['peak_rss_mb']:.0f} MB (target <= {TARGET_RSS_MB:.0f} MB)"]
    if "remote" in d:
        lines += remote_lines(d)
    if d["cold_images_per_s"]:
        cold = ", ".join(f"`{o}` {v:.0f} images/s" for o, v in d["cold_images_per_s"].items())
        lines.append(f"- page cache dropped first (posix_fadvise DONTNEED on every file): {cold}")
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(d)] + [""]
    return "\n".join(lines)


REMOTE_TARGETS = {"quasi_cold": 0.85, "random_cold": 0.6, "quasi_warm": 0.95, "random_warm": 0.95}  # x local


def remote_lines(d: dict) -> list[str]:
    lines = ["", f"## From the bucket, {d['latency_ms']:g} ms added to every request", "",
             "| order | cache | images/s | x local | target |", "|---|---|---|---|---|"]  # fmt: skip
    for key, rate in d["remote"].items():
        order, cache = key.split("_")
        ratio = rate / d["local"][order]
        target = REMOTE_TARGETS[key]
        lines.append(f"| `{order}` | {cache} | **{rate:.0f}** | **{ratio:.2f}** | >= {target} "
                     f"({'met' if ratio >= target else 'not met'}) |")  # fmt: skip
    lines += ["", "cold: an empty --cache-dir, timed from the first batch (whole shards fetched as batches first "
              "touch them); warm: the cache the cold random run filled, after the warm-up batches. local: the same "
              "store on local disk, in the page cache, after the warm-up batches. A server and the proxy on the same "
              "machine take CPU from the decode threads; docs/performance.md measures how much."]  # fmt: skip
    return lines


def targets(d: dict) -> list[str]:
    """Each target of the report, with `met` or `not met`."""
    out = []
    for o, frac in d["fraction_of_bound"].items():
        out.append(f"`{o}` {frac:.2f} of the bound (>= {TARGETS[o]}): {'met' if frac >= TARGETS[o] else 'not met'}")
    if "random" in d["images_per_s"]:
        over = d["over_zarr_python"]["random"]
        out.append(
            f"`random` {over:.1f}x zarr-python (>= {TARGET_OVER_ZARR:.0f}x): "
            f"{'met' if over >= TARGET_OVER_ZARR else 'not met'}"
        )
        floor, need = TARGET_ABSOLUTE
        if d["decode_bound_images_per_s"] >= floor:
            rate = d["images_per_s"]["random"]
            out.append(
                f"bound >= {floor:.0f}: `random` {rate:.0f} images/s (>= {need:.0f}): "
                f"{'met' if rate >= need else 'not met'}"
            )
    rss = d["peak_rss_mb"]
    out.append(f"peak RSS {rss:.0f} MB (<= {TARGET_RSS_MB:.0f}): {'met' if rss <= TARGET_RSS_MB else 'not met'}")
    return out
