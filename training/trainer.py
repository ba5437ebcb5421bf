"""A training run's state: its place under DDP, data, networks, optimisers and step; how it is built, stepped,
checkpointed and restored. `training.run` drives it."""

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.common.cli import Refused
from pipeline.common.settings import parse_bytes
from pipeline.priors import read_prior
from training import ddp
from training.config import RUN_LOCAL, TrainConfig
from training.data import Loader, StoreData
from training.devices import resolve_device
from training.loss import Criterion
from training.models import ModelSpec, create_model, fit, spec_of
from training.runfolder import RunFolder
from training.stores import Stores


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class Run:
    """Everything a training run holds; `disc`, `net_d` and `opt_d` are the discriminator's (GAN models)."""

    cfg: TrainConfig
    spec: ModelSpec
    rank: int
    world: int
    device: torch.device
    data: StoreData
    loader: Loader
    model: torch.nn.Module
    net: torch.nn.Module  # the model as stepped: compiled and/or wrapped in DDP
    criterion: Criterion
    opt: torch.optim.Optimizer
    size: int  # resize batches to this (0: the store's)
    crop: int  # then centre-crop them to this side, one the network takes (0: none)
    total: int
    disc: torch.nn.Module | None = None
    net_d: torch.nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    step: int = 0
    best_psnr: float = float("-inf")  # of the validations so far: checkpoint-best.pt holds that model
    folder: RunFolder | None = None  # --out: a local folder or a prefix in a bucket
    board: object = None  # TensorBoard's SummaryWriter (rank 0, --tensorboard)
    stores: Stores | None = None  # the stores' readers, opened once: the loader's, validation's, evaluation's

    def __post_init__(self):
        self.schedulers = [schedule(self.cfg, o, self.total) for o in (self.opt, self.opt_d) if o is not None]
        self._health: list[tuple] = []  # (step, network, loss, gradient norm) of the steps since the last check

    @property
    def pretrain_steps(self) -> int:
        """Steps of the reconstruction loss alone (GANs): as given, or the model's own share of the run."""
        given = self.cfg.pretrain_steps
        return given if given >= 0 else round(self.spec.pretrain * self.total)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    @property
    def out(self) -> Path:
        """The local folder the run writes to (copied up at checkpoints when --out is in a bucket)."""
        return self.folder.local

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last and self.device.type == "cuda"

    def autocast(self):
        """bf16 on CUDA, fp32 on the CPU: one code path."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, module: torch.nn.Module, name: str = "model") -> None:
        """loss.backward(), its loss and `module`'s gradient norm kept on the device for `check_finite`: no step
        waits on the device to learn whether they are finite."""
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), float("inf"))
        self._health.append((self.step, name, loss.detach(), grad_norm.detach()))

    def check_finite(self) -> None:
        """NonFiniteLoss (and nonfinite.json) naming the first step since the last check whose loss or gradient was
        not finite. SYNC POINT: it waits for the device; called only where the loop logs, validates or saves."""
        if not self._health:
            return
        values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, _, loss, norm in self._health])
        bad = (~torch.isfinite(values).all(dim=1)).nonzero()  # SYNC POINT: nonzero's size comes from the device
        health, self._health = self._health, []
        if len(bad):
            step, name, loss, norm = health[int(bad[0])]
            what = {"step": step, "network": name, "loss": float(loss), "grad_norm": float(norm)}
            self.note("nonfinite.json", what)
            raise NonFiniteLoss(f"non-finite loss or gradient at step {step} ({what}); last good checkpoint kept")

    def note(self, name: str, what: dict) -> None:
        """Write a small JSON file into the run's folder (and up to its bucket) before the run stops."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / name).write_text(json.dumps(what))
        with contextlib.suppress(OSError):
            self.folder.publish()


def schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """poly: lr0 (1 - step / steps)^lrPow, torch's PolynomialLR, a reading of Eq. 21-23, whose printed form rises
    (docs/training.md; tests/training/test_run.py checks the formula). step: lr0 / 10 after each lr_step share."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, round(cfg.lr_step * total)), gamma=0.1)
    return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=cfg.lr_pow)


def optimizer(cfg: TrainConfig, spec: ModelSpec, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=spec.betas, weight_decay=cfg.weight_decay)


def setup(cfg: TrainConfig, resume: bool = False, stores: Stores | None = None, folder: RunFolder | None = None) -> Run:
    """The run's data, loader, networks (initialised from the seed), loss and optimisers, on its device; its
    folder ready (with its metrics.csv from the bucket when it continues there). stores, folder: the ones the
    command opened for its checks (made here when not given)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        ddp.init(cfg.ddp_timeout, rank, world)
    device = resolve_device(cfg.device, local_rank)
    stores = stores or Stores(cfg)
    data = StoreData(stores.train, cfg.holdout, parse_bytes(cfg.preload), cfg.loader_threads)
    folder = folder or RunFolder(cfg.place(cfg.out))  # after the store is read: a store refused leaves no run folder
    if rank == 0:
        folder.check_free(resume)
    torch.manual_seed(cfg.seed)
    size = cfg.size if cfg.size != data.S else 0
    side = fit(cfg.size, spec_of(cfg.variant).stride)
    crop = side if side != cfg.size else 0
    loader = Loader(data, cfg, rank, world, pin=device.type == "cuda")
    smallest = len(data.train_idx) // loader.batches_per_epoch()
    if smallest < world:
        raise Refused(f"batches of {smallest} images cannot be shared by {world} ranks: raise --batch-size")
    total = cfg.steps or cfg.epochs * loader.batches_per_epoch()
    nets = networks(cfg, device, balance(cfg, data), data.n_classes, _wrapper(cfg, world, local_rank, device))
    if cfg.init and not resume:  # a resumed run continues its own weights
        from training.finetune import initialise

        initialise(nets["model"], cfg.variant, cfg.width, cfg.init, print if rank == 0 else lambda *a, **k: None)
    classifies = getattr(nets["model"], "classifier", None) is not None
    if rank == 0 and classifies and cfg.lam_cls > 0 and not data.group.attrs.get("classes"):
        print(f"{cfg.store} holds no image labels: the class loss is off (Eq. 18 needs them)", flush=True)
    if rank == 0:
        folder.claim(resume)  # last: a run refused while it is set up holds no lease
    folder.local.mkdir(parents=True, exist_ok=True)
    return Run(cfg, spec_of(cfg.variant), rank, world, device, data, loader, size=size, crop=crop, total=total,
               folder=folder, stores=stores, **nets)  # fmt: skip


def balance(cfg: TrainConfig, data: StoreData):
    """The balance weights of Eq. 19: Eq. 9-10 over the store's prior smoothed as p~ (--prior-sigma; 0 gives the
    store's own weights), or over --prior as given, with the store's lambda or --balance-lambda."""
    if not cfg.prior and cfg.balance_lambda < 0 and cfg.prior_sigma == 0:
        return data.weights
    from pipeline.priors import balance_weights, smooth_prior

    prior = read_prior(cfg.place(cfg.prior)) if cfg.prior else smooth_prior(data.prior, cfg.prior_sigma)
    lam = cfg.balance_lambda if cfg.balance_lambda >= 0 else float(data.group.attrs.get("lambda", 0.5))
    return balance_weights(prior, lam)


def networks(cfg: TrainConfig, device: torch.device, weights, n_classes: int, wrap=None) -> dict:
    """The model, its loss and optimiser, and a GAN's discriminator and its optimiser, on `device`; `wrap`
    compiles and/or wraps a network for DDP (default: as it is). Also what `benchmarks train` steps."""
    wrap = wrap or (lambda m: m)
    spec = spec_of(cfg.variant)
    model = create_model(cfg.variant, cfg.width, cfg.head, n_classes).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    nets = {"model": model, "net": wrap(model), "opt": optimizer(cfg, spec, model.parameters(), cfg.lr)}
    nets["criterion"] = Criterion(weights, cfg.head, cfg.lam_col, cfg.lam_cls).to(device)
    if spec.discriminator:
        disc = spec.discriminator(cfg.width).to(device)
        opt_d = optimizer(cfg, spec, disc.parameters(), cfg.lr_d or cfg.lr)
        nets |= {"disc": disc, "net_d": wrap(disc), "opt_d": opt_d}
    return nets


def _wrapper(cfg: TrainConfig, world: int, local_rank: int, device: torch.device):
    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        net = torch.compile(module) if cfg.compile else module
        if world > 1:
            ids = [local_rank] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return net

    return wrap


def train_step(run: Run, batch: dict) -> dict:
    """One optimiser step of the run's system (the adversarial step for GAN models, `training.gan`), then one
    step of the learning-rate schedules."""
    if run.disc is not None:
        from training.gan import adversarial_step

        losses = adversarial_step(run, batch, run.autocast())
    else:
        with run.autocast():
            losses = run.criterion(run.net(batch["L"]), batch["q"], batch["label"])
        run.opt.zero_grad(set_to_none=True)
        run.backward(losses["loss"], run.model)
        run.opt.step()
    for scheduler in run.schedulers:
        scheduler.step()
    return losses


def _networks(run: Run) -> dict[str, torch.nn.Module]:
    return {"model": run.model} | ({"discriminator": run.disc} if run.disc is not None else {})


def save_checkpoint(run: Run, name: str = "checkpoint-last.pt") -> None:
    """Checkpoint the run as out/name (rank 0 writes); weights or BatchNorm statistics that are not finite are never
    saved. Loads with torch.load(weights_only=True): tensors, numbers, strings and lists only."""
    run.check_finite()  # SYNC POINT: a checkpoint waits for the device in any case
    for net_name, net in _networks(run).items():
        if not all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point()):
            run.note("nonfinite.json", {"step": run.step, "weights": f"non-finite {net_name}"})
            what = f"non-finite {net_name} weights at step {run.step}"
            raise NonFiniteLoss(f"{what}; not saved, last good checkpoint kept")
    if run.rank == 0:
        state = {"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "step": run.step}
        state |= {"config": asdict(run.cfg), "torch_rng": torch.get_rng_state(), "n_classes": run.data.n_classes}
        state |= {"world": run.world}  # informative: the order and the batches do not depend on it
        state |= {"store": {"path": run.cfg.store, "build_id": str(run.data.group.attrs.get("build_id", "")),
                            "images": int(run.data.n)}}  # the store's fingerprint, for the model folder  # fmt: skip
        state |= {"schedulers": [s.state_dict() for s in run.schedulers], "best_psnr": run.best_psnr}
        if run.disc is not None:
            state |= {"discriminator": run.disc.state_dict(), "optimizer_d": run.opt_d.state_dict()}
        run.folder.save(name, lambda f: torch.save(state, f))


def check_resume(cfg: TrainConfig, state: dict, path: Path) -> None:
    """Refuse to continue a checkpoint under settings that change the results; run-local ones may differ."""
    changed = sorted(k for k, v in asdict(cfg).items() if state["config"].get(k, v) != v and k not in RUN_LOCAL)
    if changed:
        raise Refused(f"{path} was trained with other settings ({', '.join(changed)}); use another --out")


def restore(run: Run, state: dict, path) -> None:
    """Continue from a checkpoint's `state`, loaded from `path` (every network, optimiser and schedule): refused,
    naming the settings, if one that changes the results differs; the run-local ones (device, intervals, where it
    writes) may."""
    check_resume(run.cfg, state, path)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    if run.disc is not None:
        run.disc.load_state_dict(state["discriminator"])
        run.opt_d.load_state_dict(state["optimizer_d"])
    run.step, run.best_psnr = int(state["step"]), float(state.get("best_psnr", float("-inf")))
    for scheduler, saved in zip(run.schedulers, state.get("schedulers", []), strict=False):
        scheduler.load_state_dict(saved)
    torch.set_rng_state(state["torch_rng"])
    if run.rank == 0:
        print(resume_note(run, state, path), flush=True)


def resume_note(run: Run, state: dict, path) -> str:
    """What a resume continues and what changed: the ranks, and the run-local settings."""
    epoch, batch = divmod(run.step, run.loader.batches_per_epoch())
    note = f"resuming {path} at step {run.step} (epoch {epoch}, batch {batch} of {run.loader.batches_per_epoch()})"
    saved = int(state.get("world", 0))
    if saved and saved != run.world:
        note += f"; saved on {saved} ranks, now {run.world}: the same batches, each shared by {run.world}"
    was, now = state["config"], asdict(run.cfg)
    local = sorted(k for k in RUN_LOCAL if k in was and json.dumps(was[k]) != json.dumps(now[k]))
    return note + (f"; changed: {', '.join(local)}" if local else "")
