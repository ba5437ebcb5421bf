"""What a training run writes as it goes: metrics.csv (and TensorBoard), the per-rank sample audit, and the series
of its loss curve."""

import csv
import json
import os
import time
from pathlib import Path

import torch

METRICS = ["step", "epoch", "lr", "loss", "colour", "class", "images_per_s", "gan", "disc"]


class MetricsLog:
    """metrics.csv, one row every --log-every steps with the images/s since the last row (rank 0 writes). A resumed
    run first drops the rows past its checkpoint's step (a run killed after its last checkpoint logged them), so
    each step appears once."""

    def __init__(self, run, board=None):
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

    def row(self, step: int, epoch: int, lr: float, losses: dict[str, float]) -> None:
        """One line of metrics.csv (and TensorBoard's scalars) for the losses' values on the host (`on_host`)."""
        now = time.perf_counter()
        rate, self.t_last, self.seen = self.seen / (now - self.t_last), now, 0
        values = [f"{losses[k]:.6f}" for k in ("loss", "colour", "class")]
        gan = [f"{losses[k]:.6f}" if k in losses else "" for k in ("gan", "disc")]
        self.writer.writerow([step, epoch, f"{lr:.6g}", *values, f"{rate:.2f}", *gan])
        self.file.flush()
        if self.board:
            for key, value in losses.items():
                self.board.add_scalar(f"train/{key}", value, step)
            self.board.add_scalar("train/lr", lr, step)
            self.board.add_scalar("train/images_per_s", rate, step)


def on_host(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses of a step as numbers, in one copy from the device (SYNC POINT)."""
    return dict(zip(losses, torch.stack([v.detach().float() for v in losses.values()]).tolist(), strict=True))


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of a metrics.csv of steps up to `step`, without its header."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [r for r in rows if r and r[0].isdigit() and int(r[0]) <= step]


class SampleLog:
    """--sample-log DIR: each rank appends one JSON line per step to DIR/rank-R.jsonl, naming the images it
    trained on; an audit of the order across ranks and resumes (nothing is written without the flag)."""

    def __init__(self, run):
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


def loss_series(rows: list[dict], lam_cls: float) -> dict[str, list[tuple[int, float]]]:
    """The plotted series of metrics.csv's rows: total and colour loss, and the class loss as weighted in Eq. 20."""
    series = {k: [(int(r["step"]), float(r[k])) for r in rows] for k in ("loss", "colour")}
    if any(float(r["class"]) > 0 for r in rows):
        series["class x lambda_cls"] = [(int(r["step"]), float(r["class"]) * lam_cls) for r in rows]
    return series
