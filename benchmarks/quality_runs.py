"""One benchmark run of a system: its TrainConfig (the benchmark's budget, then the system's own recipe), its
training and its evaluation on the unseen store.

The quality table (`benchmarks.systems`) and its studies (`benchmarks.curves`) both run systems this way: here,
both import it and neither imports the other.
"""

import csv
import statistics
from pathlib import Path

import numpy as np

RECIPES = {  # a short budget wants larger steps than the papers' long schedules
    "sgd": {"lr": 0.05},  # the AFF nets: the embedded default's preset
    "adam": {"lr": 1e-3},  # zhang16, cunet
    "pix2pix": {"lr": 2e-4, "lr_d": 2e-4},  # pix2pix's own, with the first half of the steps L1 only
}
PAPER_WIDTH = ("cheng15",)  # a small per-pixel network: cheap at its paper's width, which the table keeps


def recipe(name: str) -> dict:
    from training.models import spec_of

    spec = spec_of(name)
    own = RECIPES["pix2pix"] if spec.discriminator else RECIPES[spec.optimizer]  # pix2pix: its own L1-first share
    return own | ({"width": 1.0} if name in PAPER_WIDTH else {})


def config(args, name: str, seed: int, out: Path, steps: int, **overrides):
    """The TrainConfig of one benchmark run: the shared budget, the system's recipe, then `overrides`."""
    from training.run import TrainConfig

    budget = {"width": args.width, "size": args.size, "batch_size": args.batch, "steps": steps, "seed": seed}
    logging = {"holdout": 0.0, "ckpt_every": steps, "log_every": max(1, steps // 20), "tensorboard": False}
    return TrainConfig(store=args.store, out=str(out), variant=name, **(budget | logging | recipe(name) | overrides))


def train_one(args, name: str, seed: int, work: Path):
    """(the trained model, its config, its training images/s)."""
    from training.run import train

    cfg = config(args, name, seed, work / f"{name}-{seed}", args.steps)
    train(cfg)
    with open(Path(cfg.out) / "metrics.csv") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]
    from training.checkpoint import load_model

    model, _, _ = load_model(Path(cfg.out) / "checkpoint-last.pt", "auto")
    return model, cfg, statistics.median(rates) if rates else float("nan")


def evaluate_one(args, model, cfg, idx: np.ndarray, guided: bool = True) -> dict:
    """Metrics per recovery (the system's own first), and its own recovery guided by the ground truth."""
    from training.evaluate import evaluate
    from training.models import spec_of

    device = next(model.parameters()).device
    out = {}
    for k, recovery in enumerate(spec_of(cfg.variant).recoveries):
        strength = 1.0 if k == 0 and guided else 0
        m = evaluate(model, args.eval_store, idx, device, cfg.size, cfg.head, recovery, guided=strength)
        m.pop("_grid")
        out[recovery] = m["model"]
        if strength:
            out |= {"guided": m["guided"], "gray": m["gray"], "gt_colourfulness": m["ground_truth_colourfulness"],
                    "gt_cf": m["ground_truth_cf"]}  # fmt: skip
    return out
