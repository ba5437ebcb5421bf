"""Train the colorization network from a preprocessed store (Sec. 4.1 of Wang et al.).

    python -m training.run                       # `full` on the embedded default, CPU-sized (minutes)
    python -m training.run --store S [--variant full] [--head classify] [--width 1] [--size 224] ...
    torchrun --nproc-per-node 2 -m training.run --store S ...   # DDP (gloo on CPU, NCCL on GPUs)

Defaults are the paper's recipe: Xavier normal init, SGD (lr 1e-3, momentum 0.9, weight decay 1e-4), the
poly schedule lr = lr0 (1 - step / steps)^0.9 (Eq. 21-23), batch 64, 224 x 224, 10 epochs, loss Eq. 20
with lambda_col = 1 and lambda_cls = 0.003. With no --store, the embedded default's preset (width 1/8, 96 x 96,
batch 16, 600 steps) trains on data/stores/embedded-train.zarr, built if missing, and evaluates on
data/stores/embedded-val.zarr. Outputs in --out: checkpoint-last.pt (atomic, every --ckpt-every steps and at the
end), checkpoint-best.pt (the best validation PSNR, with --eval-every), config.json, metrics.csv, loss.png,
tensorboard/, evaluation.{json,md,grid.png}.
"""

import csv
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pipeline.common.cli import ArgumentParser, Refused, command, one_line
from pipeline.common.lease import LeaseLost
from pipeline.common.settings import add_flags
from pipeline.common.storage import configure, first_contact, location, parse_options, reachable
from training import checkpoint, ddp
from training.config import EMBEDDED, ROOT, TrainConfig, config_from_args
from training.data import on_device
from training.models import MODELS, count_parameters, describe, fit, spec_of
from training.photostore import build_photo_store, photo_store_path
from training.runfolder import RunFolder
from training.trainer import NonFiniteLoss, Run, check_resume, restore, save_checkpoint, setup, train_step
from training.validate import Validator

__all__ = ["NonFiniteLoss", "TrainConfig", "main", "train"]
METRICS = ["step", "epoch", "lr", "loss", "colour", "class", "images_per_s", "gan", "disc"]


class MetricsLog:
    """metrics.csv, one row every --log-every steps with the images/s since the last row (rank 0 writes). A resumed
    run first drops the rows past its checkpoint's step (a run killed after its last checkpoint logged them), so
    each step appears once."""

    def __init__(self, run: Run, board=None):
        self.board = board
        path = run.out / "metrics.csv" if run.rank == 0 else Path(os.devnull)
        fresh = run.step == 0 or not path.exists()
        kept = [] if fresh or run.rank else _rows_up_to(path, run.step)
        self.file = open(path, "w", newline="")  # noqa: SIM115 - closed by __exit__
        self.writer = csv.writer(self.file)
        self.writer.writerow(METRICS)
        self.writer.writerows(kept)
        self.t_last, self.seen = time.perf_counter(), 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def count(self, images: int) -> None:
        self.seen += images

    def row(self, step: int, epoch: int, lr: float, losses: dict) -> None:
        now = time.perf_counter()
        rate, self.t_last, self.seen = self.seen / (now - self.t_last), now, 0
        values = [f"{losses[k].item():.6f}" for k in ("loss", "colour", "class")]
        gan = [f"{losses[k].item():.6f}" if k in losses else "" for k in ("gan", "disc")]
        self.writer.writerow([step, epoch, f"{lr:.6g}", *values, f"{rate:.2f}", *gan])
        self.file.flush()
        if self.board:
            for key, value in losses.items():
                self.board.add_scalar(f"train/{key}", float(value.detach()), step)
            self.board.add_scalar("train/lr", lr, step)
            self.board.add_scalar("train/images_per_s", rate, step)


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of a metrics.csv of steps up to `step`, without its header."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [r for r in rows if r and r[0].isdigit() and int(r[0]) <= step]


class SampleLog:
    """--sample-log DIR: each rank appends one JSON line per step to DIR/rank-R.jsonl, naming the images it
    trained on; an audit of the order across ranks and resumes (nothing is written without the flag)."""

    def __init__(self, run: Run):
        self.run, self.file = run, None
        if run.cfg.sample_log:
            Path(run.cfg.sample_log).mkdir(parents=True, exist_ok=True)
            self.file = open(Path(run.cfg.sample_log) / f"rank-{run.rank}.jsonl", "a")  # noqa: SIM115 - closed below

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.file:
            self.file.close()

    def write(self, step: int, epoch: int, batch: int, index: torch.Tensor) -> None:
        if self.file:
            line = {"step": step, "epoch": epoch, "batch": batch, "rank": self.run.rank, "world": self.run.world}
            self.file.write(json.dumps(line | {"images": index.tolist()}) + "\n")
            self.file.flush()


def resume_path(cfg: TrainConfig, resume: bool | str) -> str | None:
    """The checkpoint to continue from: a path or URL given, or the run's own last one (none yet: a fresh
    start)."""
    if isinstance(resume, str) and resume:
        if not (location(resume).is_file()):
            raise Refused(f"--resume: no checkpoint at {resume}")
        return resume
    if resume:
        folder = RunFolder(cfg.out)
        if folder.has("checkpoint-last.pt"):
            return folder.ref("checkpoint-last.pt")
    return None


def train(cfg: TrainConfig, resume: bool | str = False, stop_at: int | None = None) -> dict:
    """Train the run in cfg.out, or continue it (resume=True: from its own last checkpoint; a path: from that
    checkpoint, into cfg.out); stop_at (default: --stop-at) ends early with a checkpoint (pre-emption). The run
    holds cfg.out's lease throughout; a lost DDP rank ends it with `ddp.RankLost`, one line."""
    stop_at = stop_at or cfg.stop_at or None
    path = resume_path(cfg, resume)
    run = setup(cfg, resume=bool(path))
    try:
        if path:
            restore(run, path)
        with ddp.Watch(run.rank, run.world, run.cfg.ddp_timeout) as watch:
            try:
                loop(run, stop_at)
            except RuntimeError as e:
                watch.explain(e, f"at step {run.step}; {resume_advice(run)}")
                raise
        return finish(run)
    finally:
        run.folder.release()


def resume_advice(run: Run) -> str:
    """How to continue a run that stopped: --resume, from its last checkpoint if it has one."""
    if run.folder.has("checkpoint-last.pt"):
        return f"continue the run with --resume (from {run.folder.ref('checkpoint-last.pt')})"
    return "no checkpoint yet: --resume starts the run again"


def loop(run: Run, stop_at: int | None) -> None:
    """The training loop, from run.step to the end (or stop_at), with its logs, validations and checkpoints."""
    from tqdm import tqdm

    cfg = run.cfg
    board = None
    if run.rank == 0:
        (run.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        run.folder.publish()
        print(f"training {cfg.variant} ({count_parameters(run.model) / 1e6:.1f} M parameters) on {run.device} x "
              f"{run.world}: {len(run.data.train_idx)} images, {run.loader.batches_per_epoch()} batches/epoch, "
              f"steps {run.step}..{run.total}", flush=True)  # fmt: skip
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            board = SummaryWriter(run.out / "tensorboard", purge_step=run.step)
    run.board = board
    validate = Validator(run) if cfg.eval_every and run.rank == 0 else None
    bar = tqdm(total=run.total, initial=run.step, disable=run.rank != 0, unit="step", mininterval=2.0)
    run.model.train()
    with MetricsLog(run, board) as metrics, SampleLog(run) as samples, bar:
        while run.step < run.total and run.step != stop_at:
            epoch, start = divmod(run.step, run.loader.batches_per_epoch())
            for b, batch in on_device(
                run.loader.epoch(epoch, start), run.device, run.size, run.channels_last, run.crop
            ):
                if run.step >= run.total or run.step == stop_at:
                    break
                lr = run.lr
                losses = train_step(run, batch)
                samples.write(run.step, epoch, b, batch["index"])
                run.step += 1
                metrics.count(run.loader.global_size(b))
                bar.update(1)
                if run.step % cfg.log_every == 0 or run.step == run.total:
                    metrics.row(run.step, epoch, lr, losses)
                    bar.set_postfix(loss=f"{losses['loss'].item():.4f}", lr=f"{lr:.2e}")
                if validate and validate.ready and (run.step % cfg.eval_every == 0 or run.step == run.total):
                    validation(run, validate, board)
                if run.step % cfg.ckpt_every == 0:
                    checkpoints(run)
        checkpoints(run, final=True)
    if board:
        board.close()


def validation(run: Run, validate, board) -> None:
    """Score the validation images; a better PSNR than every earlier one is saved as checkpoint-best.pt."""
    scores, grid = validate(run)
    print(f"step {run.step}: validation loss {scores['loss']:.4f}, PSNR {scores['psnr']:.3f} dB", flush=True)
    if board:
        board.add_scalar("val/loss", scores["loss"], run.step)
        board.add_scalar("val/psnr", scores["psnr"], run.step)
        board.add_images("val/gray_prediction_truth", grid, run.step, dataformats="NHWC")
    if scores["psnr"] > run.best_psnr:
        run.best_psnr = scores["psnr"]
        save_checkpoint(run, "checkpoint-best.pt")


def checkpoints(run: Run, final: bool = False) -> None:
    """checkpoint-last.pt, with --keep N a numbered copy of which the N newest stay, and, for --out in a bucket,
    the local files that changed copied up. A bucket that does not answer costs a checkpoint, not the run: the
    previous one stays whole there, and only the last checkpoint's failure ends the run (with an error)."""
    try:
        save_checkpoint(run)
        if run.cfg.keep and run.rank == 0:
            save_checkpoint(run, f"checkpoint-{run.step:08d}.pt")
            for old in run.folder.step_checkpoints()[: -run.cfg.keep]:
                run.folder.delete(old)
        if run.rank == 0:
            if run.board:
                run.board.flush()
            run.folder.publish()
    except OSError as e:
        if final or run.folder.url is None:
            raise
        print(f"warning: step {run.step}: checkpoint not written to {run.folder} ({one_line(e)[:200]}); the "
              "previous one stays; training goes on", file=sys.stderr, flush=True)  # fmt: skip


def finish(run: Run) -> dict:
    """The loss curve and the evaluation (rank 0), and the end of the process group."""
    result = {"step": run.step, "checkpoint": run.folder.ref("checkpoint-last.pt")}
    if run.rank == 0:
        from training.plots import loss_curve

        with open(run.out / "metrics.csv") as f:
            loss_curve(run.out / "loss.png", loss_series(list(csv.DictReader(f)), run.cfg.lam_cls))
        result |= _evaluate(run)
        run.folder.publish()
    if run.world > 1:
        torch.distributed.destroy_process_group()
    return result


def loss_series(rows: list[dict], lam_cls: float) -> dict[str, list[tuple[int, float]]]:
    """The plotted series of metrics.csv's rows: total and colour loss, and the class loss as weighted in Eq. 20."""
    series = {k: [(int(r["step"]), float(r[k])) for r in rows] for k in ("loss", "colour")}
    if any(float(r["class"]) > 0 for r in rows):
        series["class x lambda_cls"] = [(int(r["step"]), float(r["class"]) * lam_cls) for r in rows]
    return series


def _evaluate(run: Run) -> dict:
    from training.evaluate import evaluate, write_report

    cfg = run.cfg
    if cfg.eval_store:
        from pipeline.store.format import open_store

        store, split = cfg.eval_store, "all"
        idx = np.arange(int(open_store(store).attrs["n_images"]))
    else:
        store, idx, split = cfg.store, run.data.eval_idx, "holdout"
    if len(idx) == 0:
        return {}
    idx = idx[: cfg.eval_images] if cfg.eval_images else idx
    metrics = evaluate(run.model, store, idx, run.device, cfg.size, cfg.head, cfg.recovery)
    meta = {"checkpoint": run.folder.ref("checkpoint-last.pt"), "store": store, "split": split}
    meta |= {"variant": cfg.variant, "head": cfg.head, "recovery": cfg.recovery, "step": "final"}
    path = write_report(run.out, "evaluation", metrics, meta)
    print(path.read_text(), flush=True)
    return {"evaluation": metrics}


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


def ensure_embedded_stores() -> None:
    """Build the embedded default's stores when they are missing (in this process, no Prefect)."""
    from pipeline.build import build_store
    from pipeline.config import PreprocessConfig
    from pipeline.embedded import build_embedded_dataset

    source = build_embedded_dataset(ROOT / "data" / "embedded")
    for split, key in (("train", "store"), ("val", "eval_store")):
        if not (Path(EMBEDDED[key]) / "zarr.json").is_file():
            build_store(PreprocessConfig(source=str(source), split=split), EMBEDDED[key])


@command
def main(argv=None) -> int:
    from pipeline.common.extras import require
    from pipeline.store.format import open_store

    p = ArgumentParser(prog="colorize-train", description=__doc__.split("\n\n")[0])
    add_flags(p, TrainConfig)
    p.add_argument("--config", help="settings from a JSON or YAML file (a run's config.json works); flags override")
    again = "continue the run in --out from its last checkpoint, or from CHECKPOINT into --out"
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT", help=again)
    p.add_argument("--list-models", action="store_true", help="print the registered models and exit")
    p.add_argument("--photos", metavar="DIR_OR_URL",
                   help="build the store of these photos in --out (store.zarr, reused later), then train")  # fmt: skip
    args = p.parse_args(argv)
    if args.list_models:
        print(models_table())
        return 0
    require("train", "colorize-train")
    if args.photos:
        if args.store:
            p.error("--photos builds the store in --out: not with --store")
        args.store = photo_store_path(args.out or TrainConfig.out)
    cfg = config_from_args(args)
    configure(parse_options(cfg.storage_option))
    embedded = cfg.store == EMBEDDED["store"]  # built below when missing
    with first_contact():  # checks before the run: an endpoint that does not answer is reported within seconds
        reachable(cfg.init, args.photos or "")
        for store in filter(None, (cfg.store, cfg.eval_store)):
            if not (embedded and store in EMBEDDED.values()) and store != (args.photos and cfg.store):
                open_store(store)  # refused here, in one line, if it is missing, incomplete or damaged
        path = resume_path(cfg, args.resume)
        folder = RunFolder(cfg.out)
        folder.check()
        if int(os.environ.get("RANK", "0")) == 0:  # rank 0 takes the folder's lease
            folder.check_free(bool(args.resume), (cfg.store, cfg.eval_store))
    if path:  # read with the run's own patience: a checkpoint may take longer than the checks' budget
        check_resume(cfg, checkpoint.load(path), path)
    elif cfg.init:
        from training.finetune import check_init

        check_init(cfg.variant, cfg.width, cfg.head, cfg.init)
    elif args.resume:
        print(f"--resume: no checkpoint in {cfg.out} yet, starting the run", file=sys.stderr)
    if embedded:
        ensure_embedded_stores()
    if args.photos:
        build_photo_store(args.photos, cfg.store, cfg.size)
    try:
        train(cfg, resume=args.resume)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ddp.RankLost, LeaseLost) as e:  # the others stopped, or another run took the folder over
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(4)  # not a normal exit: it would wait on the lost rank in the process group's teardown
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
