"""The training loop (nanoGPT's shape): steps, and at their intervals the logs, validations and checkpoints, then
the loss curve and the evaluation. The loop waits for the device only at those points (each marked SYNC POINT):
a step queues its work and goes on."""

import csv
import json
import sys
from dataclasses import asdict

import numpy as np
import torch

from pipeline.common.cli import one_line
from training.data import on_device
from training.logs import MetricsLog, SampleLog, loss_series, on_host
from training.models import count_parameters
from training.trainer import Run, save_checkpoint, train_step
from training.validate import Validator


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
                    run.check_finite()  # SYNC POINT: the losses and gradients since the last one, all finite?
                    values = on_host(losses)  # SYNC POINT: the losses' values
                    metrics.row(run.step, epoch, lr, values)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.2e}")
                if validate and validate.ready and (run.step % cfg.eval_every == 0 or run.step == run.total):
                    validation(run, validate, board)  # SYNC POINT: the scores
                if run.step % cfg.ckpt_every == 0:
                    checkpoints(run)  # SYNC POINT: the weights, and check_finite first
        checkpoints(run, final=True)
    if board:
        board.close()


def validation(run: Run, validate, board) -> None:
    """Score the validation images; a better PSNR than every earlier one is saved as checkpoint-best.pt."""
    run.check_finite()  # a network already broken is not scored
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


def _evaluate(run: Run) -> dict:
    """The evaluation of the final model on --eval-store, or on --store's held-out images, through the reader the
    run opened the store with."""
    from training.evaluate import evaluate, write_report

    cfg = run.cfg
    if run.stores.eval is not None:
        reader, store, split = run.stores.eval, cfg.eval_store, "all"
        idx = np.arange(reader.n)
    else:
        reader, store, idx, split = run.stores.train, cfg.store, run.data.eval_idx, "holdout"
    if len(idx) == 0:
        return {}
    idx = idx[: cfg.eval_images] if cfg.eval_images else idx
    metrics = evaluate(run.model, reader, idx, run.device, cfg.size, cfg.head, cfg.recovery)
    meta = {"checkpoint": run.folder.ref("checkpoint-last.pt"), "store": store, "split": split}
    meta |= {"variant": cfg.variant, "head": cfg.head, "recovery": cfg.recovery, "step": "final"}
    path = write_report(run.out, "evaluation", metrics, meta)
    print(path.read_text(), flush=True)
    return {"evaluation": metrics}
