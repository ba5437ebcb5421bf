"""Train the colorization network from a preprocessed store (Sec. 4.1 of Wang et al.).

    python -m training.run                       # `full` on the embedded default, CPU-sized (minutes)
    python -m training.run --store S [--variant full] [--head classify] [--width 1] [--size 224] ...
    torchrun --nproc-per-node 2 -m training.run --store S ...   # DDP (gloo on CPU, NCCL on GPUs)

Defaults are the paper's recipe: Xavier normal init, SGD (lr 1e-3, momentum 0.9, weight decay 1e-4), the
poly schedule lr = lr0 (1 - step / steps)^0.9 (Eq. 21-23), batch 64, 224 x 224, 10 epochs, loss Eq. 20
with lambda_col = 1 and lambda_cls = 0.003. With no --store, the embedded-default preset (width 1/8, 96 x 96,
batch 16, 600 steps) trains on data/stores/embedded-train.zarr, built through the flow if missing, and
evaluates on data/stores/embedded-val.zarr. Outputs in --out: checkpoint.pt (atomic, every --ckpt-every
steps and at the end), config.json, metrics.csv, loss.png, evaluation.{json,md,grid.png}.
"""

import argparse
import contextlib
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from training import checkpoint
from training.data import DataConfig, Loader, StoreData, on_device
from training.devices import resolve_device
from training.loss import Criterion
from training.model import ColorNet, ModelConfig, count_parameters
from training.order import ORDERS

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = {
    "store": str(ROOT / "data" / "stores" / "embedded-train.zarr"),
    "eval_store": str(ROOT / "data" / "stores" / "embedded-val.zarr"),
    "out": str(ROOT / "runs" / "embedded-full"),
    "width": 0.125,
    "size": 96,
    "batch_size": 16,
    "steps": 600,
    "lr": 0.05,
    "ckpt_every": 200,
}


@dataclass(frozen=True)
class TrainConfig:
    store: str
    out: str = "runs/train"
    eval_store: str = ""  # evaluate on this store; default: the held-out part of --store
    variant: str = "full"
    head: str = "classify"
    width: float = 1.0
    size: int = 224
    batch_size: int = 64
    epochs: int = 10
    steps: int = 0  # 0 = epochs x batches per epoch
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_pow: float = 0.9
    lam_col: float = 1.0
    lam_cls: float = 0.003
    holdout: float = 0.1
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    eval_images: int = 64
    recovery: str = "argmax"
    order: str = "random"  # the loader's order: random or quasi (training.order)
    window: int = 32  # quasi order: shards shuffled together
    loader_threads: int = 0  # decoding threads; 0 = the cores this process may use, less one
    device: str = "auto"
    compile: bool = False
    channels_last: bool = True  # on CUDA only: torch 2.13's CPU backward of a strided 1x1 conv crashes in it

    def __post_init__(self):
        ModelConfig(self.variant, self.head, self.width)  # validates variant, head, width
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (the encoder halves it 5 times), got {self.size}")
        if self.recovery not in ("argmax", "annealed"):
            raise ValueError(f"recovery must be 'argmax' or 'annealed', got {self.recovery!r}")
        if self.order not in ORDERS or self.loader_threads < 0 or self.window < 1:
            raise ValueError(f"order must be one of {ORDERS}, loader_threads >= 0 and window >= 1")


RUN_LOCAL = ("loader_threads",)  # settings a resumed run may change: they do not change its results


class NonFiniteLoss(RuntimeError):
    pass


def poly_lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Eq. 21-23: lr0 (1 - step / total)^lrPow."""
    return cfg.lr * (1.0 - min(step, total - 1) / total) ** cfg.lr_pow


def _dist() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun, else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(cfg: TrainConfig, resume: bool = False, stop_at: int | None = None) -> dict:
    """Train (or continue, with resume) the run in cfg.out; stop_at ends early with a checkpoint (pre-emption)."""
    rank, world, local_rank = _dist()
    device = resolve_device(cfg.device, local_rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = StoreData(cfg.store, cfg.holdout, threads=cfg.loader_threads)
    size = cfg.size if cfg.size != data.S else 0
    dcfg = DataConfig(cfg.store, cfg.batch_size, size, cfg.holdout, seed=cfg.seed, order=cfg.order)
    dcfg = replace(dcfg, window=cfg.window, threads=cfg.loader_threads)
    loader = Loader(data, dcfg, rank, world, pin=device.type == "cuda")
    per_epoch = loader.batches_per_epoch()
    total = cfg.steps or cfg.epochs * per_epoch
    model = ColorNet(ModelConfig(cfg.variant, cfg.head, cfg.width, max(1000, data.n_classes))).to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = Criterion(data.weights, cfg.head, cfg.lam_col, cfg.lam_cls).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step = 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = checkpoint.load(ckpt)
        changed = sorted(k for k, v in asdict(cfg).items() if state["config"].get(k) != v and k not in RUN_LOCAL)
        if changed:
            raise ValueError(f"{ckpt} was trained with other settings ({', '.join(changed)}); use another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
    if rank == 0:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    net = torch.compile(model) if cfg.compile else model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if device.type == "cuda" else None)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )  # one code path: bf16 on GPUs, fp32 on the CPU

    def save_state():
        tensors = [t for t in model.state_dict().values() if t.is_floating_point()]  # weights and BN statistics
        if not all(torch.isfinite(t).all() for t in tensors):
            (out / "nonfinite.json").write_text(json.dumps({"step": step, "weights": "non-finite"}))
            raise NonFiniteLoss(f"non-finite weights at step {step}; not saved, last good checkpoint kept")
        if rank == 0:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": asdict(cfg)}
            state |= {"torch_rng": torch.get_rng_state(), "n_classes": max(1000, data.n_classes)}
            checkpoint.save(ckpt, state)

    metrics_path = out / "metrics.csv" if rank == 0 else Path(os.devnull)  # one writer under DDP
    new_file = not metrics_path.exists() or step == 0
    log = open(metrics_path, "w" if new_file else "a", newline="")
    writer = csv.writer(log)
    if new_file:
        writer.writerow(["step", "epoch", "lr", "loss", "colour", "class", "images_per_s"])
    if rank == 0:
        print(
            f"training {cfg.variant} ({count_parameters(model) / 1e6:.1f} M parameters) on {device} x {world}: "
            f"{len(data.train_idx)} images, {per_epoch} batches/epoch, steps {step}..{total}",
            flush=True,
        )
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=rank != 0, unit="step", dynamic_ncols=True, mininterval=2.0)
    t_last, seen = time.perf_counter(), 0
    model.train()
    try:
        while step < total and step != stop_at:
            epoch, start = divmod(step, per_epoch)
            for _, batch in on_device(loader.epoch(epoch, start), device, size, channels_last):
                if step >= total or step == stop_at:
                    break
                grad_norm = torch.zeros(())
                lr = poly_lr(cfg, step, total)
                for g in opt.param_groups:
                    g["lr"] = lr
                L, q, label = batch["L"], batch["q"], batch["label"]
                with autocast:
                    losses = criterion(net(L), q, label)
                opt.zero_grad(set_to_none=True)
                if torch.isfinite(losses["loss"]):
                    losses["loss"].backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
                if not (torch.isfinite(losses["loss"]) and torch.isfinite(grad_norm)):
                    what = {"step": step, "loss": losses["loss"].item(), "grad_norm": float(grad_norm)}
                    (out / "nonfinite.json").write_text(json.dumps(what))
                    raise NonFiniteLoss(
                        f"non-finite loss or gradient at step {step} ({what}); last good checkpoint kept"
                    )
                opt.step()
                step += 1
                seen += L.shape[0] * world
                bar.update(1)
                if step % cfg.log_every == 0 or step == total:
                    now = time.perf_counter()
                    rate = seen / (now - t_last)
                    t_last, seen = now, 0
                    row = [step, epoch, f"{lr:.6g}", f"{losses['loss'].item():.6f}"]
                    row += [f"{losses['colour'].item():.6f}", f"{losses['class'].item():.6f}", f"{rate:.2f}"]
                    writer.writerow(row)
                    log.flush()
                    bar.set_postfix(loss=f"{losses['loss'].item():.4f}", lr=f"{lr:.2e}")
                if step % cfg.ckpt_every == 0:
                    save_state()
        save_state()
    finally:
        bar.close()
        log.close()
    result = {"step": step, "checkpoint": str(ckpt)}
    if rank == 0:
        _curve(out)
        result |= _evaluate(cfg, model, data, device)
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def _curve(out: Path) -> None:
    from training.plots import loss_curve

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    series = {k: [(int(r["step"]), float(r[k])) for r in rows] for k in ("loss", "colour")}
    if any(float(r["class"]) > 0 for r in rows):
        series["class x lambda_cls"] = [(int(r["step"]), float(r["class"]) * 0.003) for r in rows]
    loss_curve(out / "loss.png", series)


def _evaluate(cfg: TrainConfig, model, data: StoreData, device) -> dict:
    from training.evaluate import evaluate, write_report

    if cfg.eval_store:
        store = cfg.eval_store
        n = int(StoreData(store).n)
        idx, split = np.arange(n), "all"
    else:
        store, idx, split = cfg.store, data.eval_idx, "holdout"
    if len(idx) == 0:
        return {}
    idx = idx[: cfg.eval_images] if cfg.eval_images else idx
    metrics = evaluate(model, store, idx, device, cfg.size, cfg.head, cfg.recovery)
    meta = {"checkpoint": str(Path(cfg.out) / "checkpoint.pt"), "store": store, "split": split}
    meta |= {"variant": cfg.variant, "head": cfg.head, "recovery": cfg.recovery, "step": "final"}
    path = write_report(Path(cfg.out), "evaluation", metrics, meta)
    print(path.read_text(), flush=True)
    return {"evaluation": metrics}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="preprocessed store (default: the embedded-default preset)")
    for f in fields(TrainConfig):
        if f.name == "store":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), type(f.default))
            p.add_argument(flag, type=kind, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "store")}
    if args.store:
        return TrainConfig(store=args.store, **given)
    preset = dict(EMBEDDED)
    return replace(TrainConfig(**preset), **given)


def ensure_embedded_stores() -> None:
    """Build the embedded default's stores through the flow when they are missing."""
    from flows.preprocess import run_in_process
    from pipeline.sources import build_embedded_dataset

    source = build_embedded_dataset(ROOT / "data" / "embedded")
    for split, key in (("train", "store"), ("val", "eval_store")):
        if not (Path(EMBEDDED[key]) / "zarr.json").is_file():
            run_in_process(source=str(source), store=EMBEDDED[key], split=split)


def main(argv=None) -> int:
    from pipeline.store import StoreError

    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if not args.store:
            ensure_embedded_stores()
        elif not Path(cfg.store).exists():
            raise FileNotFoundError(f"no store at {cfg.store}")
    except (OSError, ValueError, StoreError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, resume=args.resume)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
