"""`colorize-train --list-models`: each registered model at its paper's size, and the recipe it trains with."""

from training.config import TrainConfig
from training.models import MODELS, describe, fit, spec_of


def models_table() -> str:
    """Each registered model at its paper's size: parameters, forward GFLOPs at 224, loss, recovery, paper."""
    rows = ["| name | parameters | GFLOPs at 224 | loss | recovery | from |", "|---|---|---|---|---|---|"]
    for name in MODELS:
        d = describe(name)
        size = f"{d['params'] / 1e6:.1f} M" if d["params"] >= 1e5 else f"{d['params'] / 1e3:.0f} k"
        params = size + (f" + D {d['discriminator_params'] / 1e6:.2f} M" if d["discriminator_params"] else "")
        rows.append(f"| {name} | {params} | {d['gflops']:.1f} | {d['loss']} | {d['recovery']} | {d['paper']} |")
    return "\n".join(rows) + "\n\n" + recipes_table()


def recipes_table() -> str:
    """What `--variant NAME` trains with when no other flag is given: its paper's recipe (docs/training.md)."""
    rows = ["| name | optimizer | lr | betas / momentum | weight decay | batch | size (trains at) | schedule | epochs "
            "| flips | other |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in MODELS:
        cfg = TrainConfig(store="-", variant=name)
        spec, side = spec_of(name), fit(cfg.size, spec_of(name).stride)
        moment = str(spec.betas) if cfg.optimizer == "adam" else str(cfg.momentum)
        schedule = f"step / 10 every {cfg.lr_step:.3g} of the run" if cfg.schedule == "step" else "poly"
        other = f"D lr {cfg.lr_d or cfg.lr:g}, lambda L1 {cfg.lam_l1:g}, L1 alone for {spec.pretrain:.0%}" if (
            spec.discriminator) else ""  # fmt: skip
        rows.append(f"| {name} | {cfg.optimizer} | {cfg.lr:g} | {moment} | {cfg.weight_decay:g} | {cfg.batch_size} "
                    f"| {cfg.size}{f' ({side})' if side != cfg.size else ''} | {schedule} | {cfg.epochs} "
                    f"| {'yes' if cfg.flip else 'no'} | {other} |")  # fmt: skip
    return "\n".join(rows)
