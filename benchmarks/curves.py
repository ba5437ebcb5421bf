"""Two studies beside the quality table (`benchmarks quality --curve 500,1000,2000,4000 --causes`).

- The curve: each system of --curve-models trained once, to the largest budget, and evaluated at every budget
  on the way (the run stops with a checkpoint at each and resumes exactly), so one schedule is seen at several
  points: PSNR, colourfulness and colour overflow against steps, and the order of Wang et al.'s Table 3.
- The causes of the AFF net's colour overflow, one change at a time to `full` at the table's budget, each
  side by side with the unchanged `full` of the same seeds: soft targets, the store's prior unsmoothed and
  Zhang's ImageNet prior for the weights (against the store's smoothed one), lambda, the optimiser and rate, and
  the recovery (argmax against annealed, from the same runs).
"""

from pathlib import Path

import numpy as np

from benchmarks.quality_runs import config, evaluate_one

TABLE3 = ("unet", "unet+cls", "unet+aff", "full")  # Wang et al.'s Table 3, in its order of rising PSNR
SHOWN = ("psnr", "colourfulness", "overflow")


def causes(zhang_prior: str | None) -> dict[str, dict]:
    """What each cause run changes in `full`'s recipe."""
    out = {"soft targets (Zhang's)": {"head": "soft"}}
    out["the store's raw prior (not smoothed) for the weights"] = {"prior_sigma": 0.0}
    if zhang_prior:
        out["Zhang's ImageNet prior for the weights"] = {"prior": zhang_prior}
    out["lambda 1 (no rebalancing)"] = {"balance_lambda": 1.0}
    out["Adam, lr 1e-3"] = {"optimizer": "adam", "lr": 1e-3}
    return out


def curve_run(args, name: str, seed: int, work: Path, idx: np.ndarray, budgets: list[int]) -> list[dict]:
    """[{steps, recovery: metrics}] of one run of `name` to max(budgets), evaluated at each budget with its own
    recovery (argmax against annealed is a cause run's question)."""
    from training.checkpoint import load_model
    from training.evaluate import evaluate
    from training.run import train

    cfg = config(args, name, seed, work / f"curve-{name}-{seed}", max(budgets))
    points = []
    for k, b in enumerate(budgets):
        train(cfg, resume=k > 0, stop_at=b if b < max(budgets) else None)
        model, _, _ = load_model(Path(cfg.out) / "checkpoint-last.pt", "auto")
        device = next(model.parameters()).device
        points.append({"steps": b, cfg.recovery: evaluate(model, args.eval_store, idx, device, cfg.size, cfg.head,
                                                          cfg.recovery)["model"]})  # fmt: skip
        print(f"curve seed {seed} {name} @{b}: {points[-1][cfg.recovery]}", flush=True)
    return points


def cause_run(args, overrides: dict, seed: int, work: Path, idx: np.ndarray) -> dict:
    from training.checkpoint import load_model
    from training.run import train

    tag = "-".join(f"{k}={v}" for k, v in overrides.items()).replace("/", "_")[:80]
    cfg = config(args, "full", seed, work / f"cause-{tag}-{seed}", args.steps, **overrides)
    train(cfg)
    model, _, _ = load_model(Path(cfg.out) / "checkpoint-last.pt", "auto")
    return evaluate_one(args, model, cfg, idx, guided=False)


def mean_spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise_curve(runs: dict[str, list[list[dict]]], own: dict[str, str]) -> dict:
    """{name: [{steps, psnr: (mean, spread), ...}]} over the seeds, own recovery."""
    out = {}
    for name, seeds in runs.items():
        out[name] = []
        for k, point in enumerate(seeds[0]):
            row = {"steps": point["steps"]}
            for m in SHOWN:
                row[m] = mean_spread([s[k][own[name]][m] for s in seeds])
            out[name].append(row)
    return out


def summarise_causes(base: list[dict], runs: dict[str, list[dict]]) -> list[dict]:
    """Rows: the base (argmax, its own recovery), the base annealed, then each cause (argmax), with the change
    of each figure against the base and whether it exceeds the two spreads added."""
    rows = [
        ("full as in the paper (argmax; the store's prior smoothed)", base, "argmax"),
        ("annealed recovery instead of argmax", base, "annealed"),
    ]
    rows += [(cause, seeds, "argmax") for cause, seeds in runs.items()]
    ref = {m: mean_spread([s["argmax"][m] for s in base]) for m in SHOWN}
    out = []
    for label, seeds, recovery in rows:
        row = {"change": label}
        for m in SHOWN:
            mean, spread = mean_spread([s[recovery][m] for s in seeds])
            delta = mean - ref[m][0]
            row[m] = (mean, spread)
            row[f"{m}_delta"] = delta
            row[f"{m}_beyond_spread"] = bool(abs(delta) > spread + ref[m][1]) and label != rows[0][0]
        out.append(row)
    return out


def table3_order(curve: dict) -> list[str]:
    """At each budget, Table 3's systems present ordered by PSNR (highest first)."""
    names = [n for n in TABLE3 if n in curve]
    if len(names) < 2:
        return []
    lines = []
    for k, row in enumerate(curve[names[0]]):
        ranked = sorted(names, key=lambda n: -curve[n][k]["psnr"][0])
        lines.append(f"{row['steps']}: " + " > ".join(f"{n} {curve[n][k]['psnr'][0]:.2f}" for n in ranked))
    return lines


def plot(path: Path, curve: dict) -> None:
    """PSNR, colourfulness and overflow against steps (log x, linear y), one panel each, stacked."""
    from PIL import Image

    from training.plots import chart

    panels = [
        chart(
            {n: [(r["steps"], r[m][0]) for r in rows] for n, rows in curve.items()},
            f"{m} (own recovery)",
            "steps",
            log_x=True,
            log_y=False,
        )  # fmt: skip
        for m in SHOWN
    ]
    img = Image.new("RGB", (panels[0].width, sum(p.height for p in panels)), "white")
    for k, p in enumerate(panels):
        img.paste(p, (0, k * p.height))
    img.save(path)


def markdown(d: dict) -> list[str]:
    lines = []
    if d.get("curve"):
        c = d["curve"]
        lines += ["", "## Along one run: each system at several budgets", "",
                  f"Each system trained once to {max(r['steps'] for r in next(iter(c.values())))} steps and evaluated "
                  "at each budget on the way (mean +- spread over the seeds, own recovery). Plot: quality.curve.png.",
                  "", "| system | steps | PSNR | colourfulness | overflow |", "|---|---|---|---|---|"]  # fmt: skip
        for name, rows in c.items():
            for r in rows:
                cells = " | ".join(f"{r[m][0]:.3f} +- {r[m][1]:.3f}" for m in SHOWN)
                lines.append(f"| {name} | {r['steps']} | {cells} |")
        order = d.get("table3_order") or []
        if order:
            lines += ["", "Wang et al.'s Table 3 order (PSNR, highest first) at each budget; the paper has full > "
                      "unet+aff > unet+cls > unet:", ""] + [f"- {o}" for o in order]  # fmt: skip
    if d.get("causes"):
        lines += ["", f"## Causes of the colour overflow, one at a time (`full`, {d['settings']['steps']} steps)", "",
                  "Each change made alone to the `full` recipe of the table, same seeds; delta against the unchanged "
                  "run; * marks a change larger than the two spreads added.", "",
                  "| change | PSNR | colourfulness | overflow |", "|---|---|---|---|"]  # fmt: skip
        for r in d["causes"]:
            cells = []
            for m in SHOWN:
                mean, spread = r[m]
                star = "*" if r[f"{m}_beyond_spread"] else ""
                cells.append(f"{mean:.3f} +- {spread:.3f} ({r[f'{m}_delta']:+.3f}{star})")
            lines.append(f"| {r['change']} | " + " | ".join(cells) + " |")
    return lines
