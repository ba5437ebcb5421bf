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

import os
import sys
from dataclasses import dataclass

from pipeline.common.cli import ArgumentParser, Refused, command
from pipeline.common.settings import add_flags
from pipeline.storage import first_contact, parse_options, reachable
from pipeline.storage.lease import LeaseLost
from training import checkpoint, ddp
from training.config import EMBEDDED, TrainConfig, config_from_args
from training.loop import finish, loop, resume_advice
from training.photostore import build_photo_store, photo_store_path
from training.runfolder import RunFolder
from training.stores import Stores, ensure_embedded_stores
from training.tables import models_table
from training.trainer import NonFiniteLoss, check_resume, restore, setup

__all__ = ["NonFiniteLoss", "TrainConfig", "main", "train"]


@dataclass
class Opened:
    """What a run opens once, before it starts: its folder, its stores' readers, and the checkpoint it continues
    from (with where that lies), shared by the command's checks and the run itself."""

    folder: RunFolder
    stores: Stores
    path: str | None = None
    state: dict | None = None

    def load(self, cfg: TrainConfig) -> dict | None:
        """The checkpoint's state, read on first use (with the run's own patience, not the checks' budget)."""
        if self.path and self.state is None:
            self.state = checkpoint.load(cfg.place(self.path))
        return self.state


def open_run(cfg: TrainConfig, resume: bool | str) -> Opened:
    """The run's folder and stores, and the checkpoint to continue from: a path or URL given, or the run's own last
    one (none yet: a fresh start), loaded once by `Opened.load`."""
    folder = RunFolder(cfg.place(cfg.out))
    path = None
    if isinstance(resume, str) and resume:
        if not cfg.place(resume).is_file():
            raise Refused(f"--resume: no checkpoint at {resume}")
        path = resume
    elif resume and folder.has("checkpoint-last.pt"):
        path = folder.ref("checkpoint-last.pt")
    return Opened(folder, Stores(cfg), path)


def train(cfg: TrainConfig, resume: bool | str = False, stop_at: int | None = None,
          opened: Opened | None = None) -> dict:  # fmt: skip
    """Train the run in cfg.out, or continue it (resume=True: from its own last checkpoint; a path: from that
    checkpoint, into cfg.out); stop_at (default: --stop-at) ends early with a checkpoint (pre-emption). opened: what
    the command opened for its checks (opened here when not given). The run holds cfg.out's lease throughout; a
    lost DDP rank ends it with `ddp.RankLost`, one line."""
    stop_at = stop_at or cfg.stop_at or None
    opened = opened or open_run(cfg, resume)
    opened.load(cfg)
    run = setup(cfg, resume=bool(opened.path), stores=opened.stores, folder=opened.folder)
    try:
        if opened.path:
            restore(run, opened.state, opened.path)
            opened.state = None  # the optimiser holds what it needs: the loaded copy goes
        with ddp.Watch(run.rank, run.world, run.cfg.ddp_timeout) as watch:
            try:
                loop(run, stop_at)
            except RuntimeError as e:
                watch.explain(e, f"at step {run.step}; {resume_advice(run)}")
                raise
        return finish(run)
    finally:
        run.folder.release()


@command
def main(argv=None) -> int:
    from pipeline.common.extras import require

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
    embedded = cfg.store == EMBEDDED["store"]  # built below when missing
    with first_contact():  # checks before the run: an endpoint that does not answer is reported within seconds
        reachable(*filter(None, (cfg.init, args.photos)), options=parse_options(cfg.storage_option))
        opened = open_run(cfg, args.resume)
        for store in filter(None, (cfg.store, cfg.eval_store)):
            if not (embedded and store in EMBEDDED.values()) and store != (args.photos and cfg.store):
                opened.stores.reader(store)  # opened once, here: refused in one line if missing or damaged
        opened.folder.check()
        if int(os.environ.get("RANK", "0")) == 0:  # rank 0 takes the folder's lease
            stores = [cfg.place(s) for s in (cfg.store, cfg.eval_store) if s]
            opened.folder.check_free(bool(args.resume), stores)
    if opened.path:
        check_resume(cfg, opened.load(cfg), opened.path)
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
        train(cfg, resume=args.resume, opened=opened)
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
