"""Stage 6, checking: the data-quality check of a finished store.

    colorize-quality STORE [--sample 16] [--out DIR]     (or python -m pipeline.check)

Checks, each recorded as passed or failed with its detail: the store opens and is complete; arrays have
the documented shapes and dtypes; every chunk of every array decodes; every source file of the split is
accounted for exactly once (stored with its index, or skipped with a reason) and the counts agree; no
category outside [0, 313); the stored prior equals the histogram of `bins`, sums to 1, and
sum(prior * weights) = 1 with weights = Eq. 9-10 of the prior; labels in [-1, classes); a random sample
re-decoded from its source file through the same path gives the same L and bins. Reported, not judged:
KL divergence of the prior against Zhang et al.'s ImageNet prior, and a PNG of both priors on the ab plane.
Writes `<out>/<store name>.quality.{json,md,png}`; exits 1 when any check fails, 2 on a bad command line.
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from kernels.gamut import Q
from pipeline.common.cli import ArgumentParser, Refused, command, make_dir, non_negative_int
from pipeline.priorplot import prior_png
from pipeline.priors import read_prior
from pipeline.storage import add_storage_option, first_contact, location, parse_options
from pipeline.store.format import (
    MANIFEST,
    StoreError,
    image_slots,
    missing_shards,
    open_store,
    read_slots,
    source_of,  # fmt: skip
)
from pipeline.store.lifecycle import outcome_counts


class Report:
    def __init__(self):
        self.checks: list[dict] = []
        self.facts: dict = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)


def _expected(group) -> dict:
    """Each array's (shape, dtype): the per-slot arrays over the store's slots, the per-image ones over N."""
    s, n = int(group.attrs["S"]), int(group.attrs["n_images"])
    slots, h = int(group.attrs.get("n_slots", n)), s // 4
    out = {"L": ((slots, s, s), np.uint8), "bins": ((slots, h, h), np.int16), "label": ((slots,), np.int16)}
    out |= {"path": ((n,), None)} | ({"slots": ((n,), np.int64)} if "n_slots" in group.attrs else {})
    if group.attrs["config"].get("full_bins"):
        out["bins_full"] = ((slots, s, s), np.int16)
    return out


def _scan(group, rep: Report, slots: np.ndarray) -> np.ndarray | None:
    """Read every array shard by shard: decodable, and the bins histogram of the stored images (an empty slot
    reads as zeros, and counts for nothing). None if a read failed."""
    import hashlib

    counts = np.zeros(Q, np.int64)
    ok = True
    digests = {}
    n_slots = group["label"].shape[0]
    present = np.zeros(n_slots, bool)
    present[slots] = True
    for name in ("L", "bins", "bins_full", "label"):
        if name not in group:
            continue
        arr = group[name]
        digest = hashlib.sha256()
        step = arr.shards[0] if arr.shards else arr.chunks[0]
        for lo in range(0, n_slots, step):
            try:
                block = arr[lo : min(n_slots, lo + step)][present[lo : lo + step]]
            except Exception as e:  # noqa: BLE001 - any decode failure names its shard
                shard = f"{name}/c/{lo // step}"
                ok = rep.check(f"{shard} decodes", False, f"slots {lo}..{lo + step - 1}: {type(e).__name__}: {e}")
                continue
            digest.update(np.ascontiguousarray(block).tobytes())
            if name == "bins":
                if block.min(initial=0) < 0 or block.max(initial=0) >= Q:
                    ok = rep.check("bins in [0, 313)", False, f"shard {lo // step} has {block.min()}..{block.max()}")
                else:
                    counts += np.bincount(block.ravel(), minlength=Q)
        digests[name] = digest.hexdigest()
    rep.facts["sha256"] = digests  # of each array's stored images, decoded: equal stores have equal digests
    rep.check("every chunk decodes (crc32c verified)", ok)
    return counts if ok else None


def _manifest(store, group, rep: Report, slots: np.ndarray, source) -> list[dict]:
    n = len(slots)
    try:
        records = [json.loads(line) for line in (store / MANIFEST).read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        rep.check("manifest readable", False, f"{MANIFEST}: {type(e).__name__}: {e}")
        return []
    stored = [r for r in records if r["outcome"] == "stored"]
    skipped = [r for r in records if r["outcome"] != "stored"]
    rep.check("stored count = N", len(stored) == n, f"{len(stored)} stored records, N = {n}")
    rep.check("stored indices 0..N-1 in order", [r.get("index") for r in stored] == list(range(len(stored))))
    if "slots" in group:
        rep.check("slots array = stored records' slots", [r.get("slot") for r in stored] == slots.tolist())
    rep.check("every skip has a reason", all(r.get("reason") for r in skipped), f"{len(skipped)} skipped")
    paths = [str(p) for p in group["path"][:]] if "path" in group else []
    rep.check("path array = stored sources", paths == [r["path"] for r in stored])
    outcomes = outcome_counts(records)
    rep.check("counts attribute = manifest", outcomes == dict(group.attrs["counts"]), json.dumps(outcomes))
    rep.facts["outcomes"] = outcomes
    cfg = group.attrs["config"]
    if source is not None:
        from pipeline.config import PreprocessConfig
        from pipeline.layouts import find

        known = {f.name for f in dataclasses.fields(PreprocessConfig)}  # a store's older settings are passed over
        found = find(PreprocessConfig(**{k: v for k, v in cfg.items() if k in known}))
        rep.facts["layout"] = found.layout
        listed = [r["path"] for r in records]
        expected = [s.path for s in found.sources] + [r["path"] for r in found.skipped]
        dupes = len(listed) - len(set(listed))
        missing = sorted(set(expected) - set(listed))
        rep.check(
            f"every source accounted for once ({found.layout} layout)",
            not missing and not dupes and len(expected) == len(listed),
            f"{len(expected)} sources, {len(listed)} records, {len(missing)} missing, {dupes} duplicated"
            + (f"; first missing: {missing[0]}" if missing else ""),
        )
    else:
        rep.check("source present for re-check", True, f"{cfg['source']} not here: accounting and re-decode skipped")
    return records


def _resample(source, group, records: list[dict], rep: Report, k: int, seed: int, slots: np.ndarray) -> None:
    from kernels import image_targets
    from pipeline.decode import cropper
    from pipeline.discover import read_path

    cfg = group.attrs["config"]
    stored = [r for r in records if r["outcome"] == "stored"]
    if not stored or source is None:
        return
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(stored), size=min(k, len(stored)), replace=False).tolist())
    crop = cropper(int(cfg["size"]), 1, "cpu")
    bad = []
    for i in pick:
        r = stored[i]
        data = read_path(source, r["path"])
        rgb = crop.crop_as(data, r.get("decoder", "dali"))
        if rgb is None:
            bad.append(f"{r['path']}: no longer decodes")
            continue
        L, bins, _ = image_targets(rgb[None])
        slot = int(slots[r["index"]])
        try:
            stored_L, stored_bins = (read_slots(group, k, np.array([slot]), "")[0] for k in ("L", "bins"))
        except StoreError as e:
            bad.append(f"{r['path']}: {e}")
            continue
        dl = int(np.abs(L[0].astype(np.int16) - stored_L).max())
        db = int((bins[0] != stored_bins).sum())
        if dl or db:
            bad.append(f"{r['path']} (index {r['index']}): max |dL| {dl}, {db} bins differ")
    rep.check(f"{len(pick)} random images re-decoded equal", not bad, "; ".join(bad[:3]))


def _priors(group, counts: np.ndarray | None, rep: Report, zhang: np.ndarray | None) -> tuple[np.ndarray, object]:
    from pipeline.priors import balance_weights

    prior = np.asarray(group["prior"][:], dtype=np.float64)
    weights = np.asarray(group["weights"][:])
    rep.check("prior sums to 1", abs(prior.sum() - 1) < 1e-9, f"sum {prior.sum():.12f}")
    rep.check("prior >= 0", (prior >= 0).all())
    s = float((prior * weights).sum())
    rep.check("sum(prior * weights) = 1", abs(s - 1) < 1e-5, f"{s:.8f}")
    lam = float(group.attrs["lambda"])
    rep.check("weights = Eq. 9-10 of the prior", np.allclose(weights, balance_weights(prior, lam), rtol=1e-6))
    if counts is not None and counts.sum():
        rep.check("prior = histogram of bins", np.allclose(prior, counts / counts.sum(), rtol=1e-9, atol=1e-15))
    rep.facts["bins_used"] = int((prior > 0).sum())
    if zhang is not None:
        z = zhang / zhang.sum()
        nz = prior > 0
        rep.facts["kl_prior_vs_zhang"] = float((prior[nz] * np.log(prior[nz] / np.maximum(z[nz], 1e-300))).sum())
        rep.facts["kl_zhang_vs_prior_smoothed"] = float(
            (z * np.log(z / (0.999 * prior + 0.001 / Q))).sum()
        )  # smoothed: the store may leave bins empty
        return prior, z
    rep.facts["kl_prior_vs_zhang"] = None
    return prior, None


UNBACKED = 1 << 20  # slots read even when shards are missing (8 MB of them), to check the rest


def run(store, sample: int = 16, seed: int = 0, zhang_prior: np.ndarray | None = None) -> tuple[Report, object]:
    """The checks of `store`; zhang_prior: Zhang et al.'s ImageNet prior (`read_prior`), to report the KL against."""
    rep = Report()
    store = location(store)
    try:
        group = open_store(store)
    except StoreError as e:
        rep.check("store opens and is complete", False, str(e))
        return rep, None
    rep.check("store opens and is complete", True)
    gone, shown = missing_shards(group, store)
    rep.check("every shard file present", not gone, ", ".join(shown) + (f" ... ({gone} in all)" if gone > 5 else ""))
    shapes_ok = True
    for name, (shape, dtype) in _expected(group).items():
        if name not in group:
            shapes_ok = rep.check(f"array {name} present", False)
            continue
        arr = group[name]
        good = arr.shape == shape and (dtype is None or arr.dtype == dtype)
        shapes_ok &= rep.check(f"{name} shape and dtype", good, f"{arr.shape} {arr.dtype}")
    for name, dtype in (("prior", np.float64), ("weights", np.float32)):
        good = name in group and group[name].shape == (Q,) and group[name].dtype == dtype
        shapes_ok &= rep.check(f"{name} shape and dtype", good)
    if not shapes_ok or (gone and group["label"].shape[0] > UNBACKED):  # what n_slots claims is not all there:
        return rep, group  # reading slots would allocate from a count nothing backs
    slots = image_slots(group)
    n = len(slots)
    span = f"{n} images at slots {slots.min()} to {slots.max()} of {group['label'].shape[0]}" if n else ""
    if not rep.check("slots increase within [0, slots)", n == 0 or (bool((np.diff(slots) > 0).all()) and
                     0 <= slots[0] and slots[-1] < group["label"].shape[0]), span):  # fmt: skip
        return rep, group  # every read below goes through the slots
    counts = _scan(group, rep, slots)
    source = source_of(group, store)  # the store's options reach its source too; None: not here to re-check
    source = source if source.is_dir() else None
    records = _manifest(store, group, rep, slots, source)
    try:
        labels = read_slots(group, "label", slots, str(store)) if n else np.zeros(0, np.int16)
    except StoreError as e:
        rep.check("labels decode", False, str(e))
        labels = np.zeros(0, np.int16)
    n_classes = len(group.attrs.get("classes", []))
    rep.check("labels in [-1, classes)", n == 0 or (labels.min() >= -1 and labels.max() < n_classes))
    rep.facts["unknown_labels"] = int((labels == -1).sum())
    priors = _priors(group, counts, rep, zhang_prior)
    rep.facts["priors"] = priors
    _resample(source, group, records, rep, sample, seed, slots)
    rep.facts["n_images"] = n
    return rep, group


def _markdown(store: Path, rep: Report) -> str:
    f = rep.facts
    lines = [f"# Data quality: {store}", "", f"**{'PASS' if rep.ok else 'FAIL'}** - {len(rep.checks)} checks", ""]
    lines += ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['check']} | {'ok' if c['ok'] else 'FAILED'} | {c['detail']} |" for c in rep.checks]
    lines += ["", f"- images: {f.get('n_images')}; outcomes: {f.get('outcomes')}; layout read: {f.get('layout')}"]
    lines += [f"- categories used: {f.get('bins_used')} of {Q}; unknown labels: {f.get('unknown_labels')}"]
    if f.get("kl_prior_vs_zhang") is not None:
        lines += [
            f"- KL(store prior || Zhang's ImageNet prior) = {f['kl_prior_vs_zhang']:.4f} nats; "
            f"KL(Zhang || store, smoothed) = {f['kl_zhang_vs_prior_smoothed']:.4f} nats"
        ]
    else:
        lines += ["- KL against Zhang's prior: not computed (give --zhang-prior prior_probs.npy)"]
    return "\n".join(lines) + "\n"


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="colorize-quality", description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--sample", type=non_negative_int, default=16, help="images re-decoded from their source")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", default="reports/quality")
    p.add_argument("--zhang-prior", help="Zhang et al.'s ImageNet prior (prior_probs.npy): report the KL against it")
    add_storage_option(p)
    args = p.parse_args(argv)
    options = parse_options(args.storage_option)
    store = location(args.store, options)
    with first_contact():  # an endpoint that does not answer is reported within seconds
        if not (store / "zarr.json").is_file():  # not a store at all: bad input, not a failed check
            what = "a file" if store.is_file() else "no zarr.json in it" if store.is_dir() else "nothing there"
            raise Refused(f"{store} is not a store ({what})")
    zhang = read_prior(location(args.zhang_prior, options)) if args.zhang_prior else None
    out = make_dir(args.out)
    rep, _ = run(store, args.sample, args.seed, zhang)
    stem = out / f"{store.resolve().name}.quality"  # a URL's last name, as a folder's
    priors = rep.facts.pop("priors", None)
    if priors is not None:
        prior, zhang = priors
        panels = [("this store", prior)] + ([("Zhang et al. ImageNet", zhang)] if zhang is not None else [])
        prior_png(Path(f"{stem}.png"), panels)
    Path(f"{stem}.json").write_text(json.dumps({"store": str(store), "ok": rep.ok, "checks": rep.checks, **rep.facts}))
    md = _markdown(store, rep)
    Path(f"{stem}.md").write_text(md)
    print(md)
    failed = [c for c in rep.checks if not c["ok"]]
    for c in failed:
        print(f"FAILED: {c['check']}: {c['detail']}", file=sys.stderr)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
