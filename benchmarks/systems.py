"""Every registered system trained on the same store and budget, evaluated on the same unseen store.

For each of --seeds seeds and each registered model: `training.run.train` on --store for --steps steps at
--width, --size and --batch (each system with its own loss, optimiser and a learning rate for a short budget,
RECIPES of `benchmarks.quality_runs`), then `training.evaluate` on --eval-store with every colour recovery the
system takes, and with its own recovery guided by each image's ground-truth histogram (CU-net's "+Global
histogram"). Reported per system: PSNR, SSIM, colourfulness, Zhang's raw accuracy (AuC, plain and rebalanced),
parameters and GFLOPs at 224 (paper size) and at the benchmark's width, training images/s; mean and spread over
the seeds; the gray baseline and the ground truth's colourfulness; which PSNR differences exceed the spread; the
papers' own figures (ImageNet or COCO, not comparable in budget). Writes reports/benchmarks/quality.{json,md}
and quality.grid.png.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import curves
from benchmarks.quality_runs import evaluate_one, recipe, train_one
from benchmarks.report import machine, settings, write
from pipeline.common.cli import ArgumentParser

PAPERS = {  # (PSNR, SSIM) as their papers report them, on their data
    "unet": (23.1783, 0.8921, "Wang et al. Table 3, ImageNet val"),
    "unet+cls": (24.1615, 0.9119, "Wang et al. Table 3, ImageNet val"),
    "unet+aff": (24.7595, 0.9260, "Wang et al. Table 3, ImageNet val"),
    "full": (25.8803, 0.9368, "Wang et al. Tables 2-3, ImageNet val"),
    "zhang16": (21.7910, 0.8915, "Wang et al. Table 2, ImageNet val"),
    "cunet": (23.43, None, "Wang, Chen and Tian 2022, Table 10, automatic (27.73 with a global histogram)"),
    "pix2pix": (
        24.7595,
        0.9260,
        "a U-Net + PatchGAN study after Isola, Zhu, Zhou and Efros 2017, Image-to-Image "
        "Translation with Conditional Adversarial Networks; Table 1, COCO subset",
    ),
    "zhang16-liu": (26.663, 0.959, "Liu, Gao and Li, Table 1, mean of 3 good test images (MSE baseline 21.325)"),
}
METRICS = ("psnr", "ssim", "mae", "colourfulness", "cf", "delta_cf", "auc", "auc_rebalanced", "overflow")


def grid_row_images(args, model, cfg, idx: np.ndarray) -> list[np.ndarray]:
    from pipeline.store.format import image_slots, open_store
    from training.evaluate import predict_ab
    from training.metrics import lab_to_rgb8

    group = open_store(args.eval_store)
    L8 = torch.from_numpy(np.asarray(group["L"].oindex[image_slots(group)[idx]]))
    ab = predict_ab(model, L8, cfg.size, cfg.head, cfg.recovery)
    return list(lab_to_rgb8(L8.to(ab.device).double() * (100.0 / 255.0), ab).cpu().numpy())


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Mean and spread (sample standard deviation) of every metric over the seeds, per system and recovery."""
    out = {}
    for name, seeds in runs.items():
        out[name] = {}
        for recovery in (k for k in seeds[0]["metrics"] if isinstance(seeds[0]["metrics"][k], dict)):
            have = seeds[0]["metrics"][recovery]
            values = {m: [s["metrics"][recovery][m] for s in seeds] for m in METRICS if m in have}
            out[name][recovery] = {m: float(np.mean(v)) for m, v in values.items()}
            out[name][recovery] |= {
                f"{m}_spread": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()
            }
        out[name]["train_images_per_s"] = float(np.mean([s["images_per_s"] for s in seeds]))
    return out


def separated(systems: dict, own: dict) -> list[str]:
    """The pairs of systems whose mean PSNR (own recovery) differ by more than the sum of their spreads."""
    names, lines = list(systems), []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = systems[a][own[a]], systems[b][own[b]]
            if abs(ra["psnr"] - rb["psnr"]) > ra["psnr_spread"] + rb["psnr_spread"]:
                hi, lo = (a, b) if ra["psnr"] > rb["psnr"] else (b, a)
                lines.append(f"{hi} > {lo} by {abs(ra['psnr'] - rb['psnr']):.2f} dB")
    return lines


def main(argv=None) -> int:
    from pipeline.store.format import open_store
    from training.models import MODELS, count_parameters, create_model, describe, spec_of
    from training.plots import grid

    p = ArgumentParser(prog="python -m benchmarks quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="the training store")
    p.add_argument("--eval-store", required=True, help="a store of photos the systems never saw")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registered names (default: all)")
    p.add_argument("--max-images", type=int, default=64, help="images of --eval-store evaluated (0 = all)")
    p.add_argument("--grid-images", type=int, default=6)
    p.add_argument("--curve", default="", help="budgets, e.g. 500,1000,2000,4000: --curve-models trained once each, "
                   "evaluated at every budget")  # fmt: skip
    p.add_argument("--curve-models", default="full,unet,unet+aff,zhang16")
    p.add_argument("--causes", action="store_true", help="the overflow's causes, one at a time on full (--steps)")
    p.add_argument("--zhang-prior", help="Zhang's prior_probs.npy: also the cause run weighted by it")
    p.add_argument("--out", default="reports/benchmarks")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    for n in names:
        spec_of(n)
    n_eval = int(open_store(args.eval_store).attrs["n_images"])
    idx = np.arange(min(n_eval, args.max_images) if args.max_images else n_eval)
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    runs: dict[str, list[dict]] = {n: [] for n in names}
    columns = []
    for seed in range(args.seeds):
        for name in names:
            model, cfg, rate = train_one(args, name, seed, work)
            runs[name].append({"metrics": evaluate_one(args, model, cfg, idx), "images_per_s": rate})
            if seed == 0:
                columns.append(grid_row_images(args, model, cfg, idx[: args.grid_images]))
            print(f"seed {seed} {name}: {runs[name][-1]['metrics'][cfg.recovery]}", flush=True)
    studies = _studies(args, names, runs, idx, work)
    systems = summarise(runs)
    own = {n: spec_of(n).recoveries[0] for n in names}
    for n in names:
        with torch.device("meta"):
            small = count_parameters(create_model(n, recipe(n).get("width", args.width)))
        systems[n] |= {"describe": describe(n), "params_at_width": small, "paper": PAPERS.get(n)}
    first = runs[names[0]][0]["metrics"]
    data = {
        "systems": systems,
        "own_recovery": own,
        "gray": first["gray"],
        "ground_truth_colourfulness": first["gt_colourfulness"],
        "ground_truth_cf": first["gt_cf"],
        "separated_by_more_than_the_spread": separated(systems, own),
        "settings": settings(args, ("store", "eval_store", "steps", "width", "size", "batch", "seeds"))
        | {"images": len(idx), "recipes": {n: recipe(n) for n in names}},
        "machine": machine(),
    } | studies
    Path(args.out).mkdir(parents=True, exist_ok=True)
    grid_path = Path(args.out) / "quality.grid.png"
    gray_rgb, truth = _gray_and_truth(args.eval_store, idx[: args.grid_images])
    rows = [[gray_rgb[k], *(col[k] for col in columns), truth[k]] for k in range(len(truth))]
    grid(grid_path, rows, ["input", *names, "ground truth"])
    if studies.get("curve"):
        curves.plot(Path(args.out) / "quality.curve.png", studies["curve"])
    write("quality", data, _markdown(data), args.out)
    return 0


def _studies(args, names: list[str], runs: dict, idx: np.ndarray, work: Path) -> dict:
    """The curve and the cause runs (benchmarks.curves), when asked for."""
    from training.models import spec_of

    out = {}
    if args.curve:
        budgets = sorted({int(b) for b in args.curve.split(",") if b})
        models = [n for n in args.curve_models.split(",") if n]
        for n in models:
            spec_of(n)
        curve = {n: [curves.curve_run(args, n, seed, work, idx, budgets) for seed in range(args.seeds)] for n in models}
        out["curve"] = curves.summarise_curve(curve, {n: spec_of(n).recoveries[0] for n in models})
        out["table3_order"] = curves.table3_order(out["curve"])
    if args.causes:
        base = [r["metrics"] for r in runs["full"]] if "full" in runs else [
            curves.cause_run(args, {}, seed, work, idx) for seed in range(args.seeds)]  # fmt: skip
        changed = {c: [curves.cause_run(args, o, seed, work, idx) for seed in range(args.seeds)]
                   for c, o in curves.causes(args.zhang_prior).items()}  # fmt: skip
        out["causes"] = curves.summarise_causes(base, changed)
    return out


def _gray_and_truth(store: str, idx: np.ndarray) -> tuple[list, list]:
    from pipeline.store.format import image_slots, open_store
    from training.evaluate import ground_truth
    from training.metrics import gray_rgb8

    group = open_store(store)
    L = torch.from_numpy(np.asarray(group["L"].oindex[image_slots(group)[idx]])).double() * (100.0 / 255.0)
    gray = list(gray_rgb8(L).numpy())
    truth = [t if t is not None else g for t, g in zip(ground_truth(group, idx, store), gray, strict=True)]
    return gray, truth


def _markdown(d: dict) -> str:
    s, systems = d["settings"], d["systems"]
    shown = [k for k in METRICS if k in d["gray"]]  # a report of a run before CF was measured has no CF columns
    names = {"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE", "colourfulness": "colourfulness", "cf": "CF",
             "delta_cf": "ΔCF", "auc": "AuC", "auc_rebalanced": "AuC rebal.", "overflow": "overflow"}  # fmt: skip
    lines = [
        "# Every registered system, same data and budget",
        "",
        f"Trained on {s['store']} for {s['steps']} steps (width {s['width']}, {s['size']} x {s['size']}, batch "
        f"{s['batch']}), {s['seeds']} seed(s); evaluated on {s['images']} images of {s['eval_store']}, never seen. "
        f"Mean +- spread (sample standard deviation over the seeds). CPU: {d['machine']['cpu']}.",
        "",
        f"| system | recovery | {' | '.join(names[k] for k in shown)} | params (paper / here) | GFLOPs 224 "
        "| train img/s |",
        "|---|---|" + "---|" * (len(shown) + 3),
    ]
    for name, r in systems.items():
        info = r["describe"]
        for recovery in [k for k, v in r.items() if isinstance(v, dict) and "psnr" in v and k != "gray"]:
            m = r[recovery]
            label = "guided by its ground truth" if recovery == "guided" else recovery
            cells = [_cell(m, k) for k in shown]
            lines.append(
                f"| {name} | {label} | " + " | ".join(cells) + f" | {info['params'] / 1e6:.2f} M / "
                f"{r['params_at_width'] / 1e6:.2f} M | {info['gflops']:.1f} | {r['train_images_per_s']:.0f} |"
            )
    g = d["gray"]
    lines += [
        "| gray baseline (a = b = 0) | | " + " | ".join(_cell(g, k, spread=False) for k in shown) + " | | | |",
        "| ground truth | | "
        + " | ".join(
            {"colourfulness": _cell(d, "ground_truth_colourfulness"), "cf": _cell(d, "ground_truth_cf")}.get(k, "")
            for k in shown
        )
        + " | | | |",  # fmt: skip
        "",
        "PSNR differences (own recovery) larger than the two systems' spreads added: "
        + ("; ".join(d["separated_by_more_than_the_spread"]) or "none")
        + "."
        + (
            " With one seed the spread is 0 and every difference counts: read those as one draw."
            if s["seeds"] == 1
            else f" The spread of {s['seeds']} seeds is itself a rough estimate: read small separations as leads."
        ),
        "",
        "Guidance by the ground truth's own histogram (CU-net's '+Global histogram', an oracle): PSNR change "
        + ", ".join(f"{n} {r['guided']['psnr'] - r[d['own_recovery'][n]]['psnr']:+.2f} dB" for n, r in systems.items())
        + ".",
        "",
        "## Their papers' figures (their data and budgets, not comparable with the rows above)",
        "",
        "| system | PSNR | SSIM | where |",
        "|---|---|---|---|",
    ]
    for name, r in systems.items():
        if r["paper"]:
            psnr, ssim, where = r["paper"]
            lines.append(f"| {name} | {psnr} | {ssim if ssim is not None else ''} | {where} |")
    from training.published import CAVEAT, table

    lines += ["", "CF: the colourfulness of CT2's and DDColor's code (absolute opponent channels); ΔCF: the "
              "difference of the mean CFs of prediction and ground truth. FID needs ImageNet's validation images "
              "and the Inception's weights: `colorize-evaluate --protocol val5k` measures it (docs/evaluation.md).",
              "", "## Published on ImageNet val5k (other systems, full training; not reproduced here)", "",
              *table("val5k", []), "", CAVEAT]  # fmt: skip
    return "\n".join(lines + curves.markdown(d)) + "\n"


def _cell(m: dict, k: str, spread: bool = True) -> str:
    """A figure and, where it has one, its spread over the seeds; colourfulness and CF to one decimal."""
    if k not in m:
        return ""
    if "colourfulness" in k or k.endswith("cf") and "delta" not in k:
        return f"{m[k]:.1f}"
    return f"{m[k]:.3f} +- {m[k + '_spread']:.3f}" if spread and f"{k}_spread" in m else f"{m[k]:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
