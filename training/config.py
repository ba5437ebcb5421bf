"""The training run's settings: `TrainConfig` (its fields are `python -m training.run`'s flags) and the
embedded default's CPU-sized preset."""

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.cli import Refused, one_line
from pipeline.common.settings import check_values, given, parse_bytes, setting
from pipeline.priors import read_prior
from pipeline.storage import TooLarge, location, parse_options
from pipeline.storage.files import read_bounded
from training.data import DataConfig
from training.models import check_width, spec_of

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
MAX_CONFIG = 16 << 20  # bytes of a --config file
# Settings a resumed run may change: they decide where and how it runs and reports, not what it learns.
RUN_LOCAL = ("out", "device", "loader_threads", "prefetch", "preload", "cache_dir", "cache_limit", "storage_option",
             "stop_at", "sample_log", "ddp_timeout", "ckpt_every", "keep", "log_every", "tensorboard",
             "eval_every", "val_images", "eval_images", "eval_store", "recovery")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TrainConfig(DataConfig):
    """A training run's settings: each field is a flag of `colorize-train`; the loader's come from DataConfig."""

    # data and outputs
    store: str = setting(help="preprocessed store (default: the embedded default's preset)")
    out: str = setting("runs/train", "the run's folder: checkpoint, config, metrics, evaluation")
    eval_store: str = setting("", "evaluate on this store (default: the held-out part of --store)")
    holdout: float = setting(0.1, "fraction of the store held out for evaluation")
    # the model, its loss and colour recovery
    variant: str = setting("full", "a registered model (--list-models): unet, unet+cls, unet+aff, full, ...")
    head: str = setting("", "its loss: classify (Eq. 19), soft (Zhang's), l1 or l2 (regression); default: its own")
    width: float = setting(1.0, "channel multiplier (1 = the paper's)")
    init: str = setting("", "start from these weights (a model folder or a checkpoint), fresh optimiser and schedule")
    recovery: str = setting("", "argmax (Eq. 15-16), annealed (Zhang's mean) or regression; default: the model's")
    lam_col: float = setting(1.0, "weight of the colour loss (Eq. 20)")
    lam_cls: float = setting(0.003, "weight of the class loss (Eq. 20)")
    prior: str = setting(
        "",
        "a .npy of 313 category probabilities (e.g. Zhang's ImageNet prior_probs.npy) to "
        "rebalance by instead of the store's prior",
    )
    balance_lambda: float = setting(-1.0, "lambda of the balance weights (Eq. 9-10) in [0, 1]; -1: the store's")
    prior_sigma: float = setting(5.0, "the store's prior smoothed over the ab plane by a Gaussian of this sigma, as "
                                 "Eq. 9's p~ (Zhang's Eq. 4); 0: raw. A --prior file is used as given")  # fmt: skip
    # the optimiser and its schedule
    optimizer: str = setting("", "sgd or adam (default: the model's own: SGD for the AFF nets, Adam for the others)")
    size: int | None = setting(
        None, "training size; one the network cannot take is centre-cropped to its stride (default: the system's)"
    )
    epochs: int | None = setting(None, "epochs, when --steps is 0 (default: the system's)")
    steps: int = setting(0, "optimizer steps (0 = epochs x batches per epoch)")
    lr: float | None = setting(None, "initial learning rate (default: the system's)")
    compile: bool = setting(False, "torch.compile the model")
    momentum: float | None = setting(None, "SGD momentum (default: the system's)")
    weight_decay: float | None = setting(None, "weight decay (default: the system's)")
    batch_size: int | None = setting(None, "images per step over all ranks, an even share each (default: the system's)")
    flip: bool | None = setting(
        None, "flip half the images of each batch horizontally, L and targets together (default: the system's)"
    )
    lr_pow: float = setting(0.9, "power of the poly schedule")
    schedule: str = setting(
        "", "poly (Eq. 21-23 as read) or step (the rate / 10 after each --lr-step of the run); default: the model's own"
    )
    lr_step: float | None = setting(
        None, "step schedule: the share of the steps between divisions by 10 (default: the system's)"
    )
    # GAN models only
    lam_l1: float | None = setting(None, "weight of the L1 loss beside the GAN loss (default: the system's)")
    lr_d: float | None = setting(None, "the discriminator's learning rate (0 = --lr; default: the system's)")
    pretrain_steps: int = setting(
        -1, "steps of L1 alone before the adversarial training (-1: the model's own share of the run, half for pix2pix)"
    )
    label_smoothing: float = setting(0.0, "D's target for real pairs is 1 - this (one-sided; Nazeri et al. 0.1)")
    # where it runs, and how often it reports
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    preload: str = setting("2GB", "decode the store into memory when it takes less than this (0: read the shards)")
    cache_dir: str = setting(
        "", "a store in a bucket: keep whole shards in this local folder (shared by a node's ranks)"
    )
    cache_limit: str = setting("50GB", "at most this many bytes in --cache-dir (least recently used shards go first)")
    storage_option: tuple[str, ...] = setting(
        (), "KEY=VALUE for the object store (repeatable); no credentials", quiet=True
    )
    channels_last: bool = setting(True, "channels_last on CUDA (the CPU backward of a strided 1x1 conv crashes)")
    ckpt_every: int = setting(500, "steps between checkpoint-last.pt's")
    keep: int = setting(0, "also keep the last N step checkpoints (checkpoint-00001000.pt, ...)")
    log_every: int = setting(10, "steps between rows of metrics.csv and TensorBoard points")
    tensorboard: bool = setting(True, "TensorBoard logs in out/tensorboard (losses, lr, images/s, validation)")
    eval_every: int = setting(0, "steps between validations (loss, PSNR; checkpoint-best.pt): 0 = at the end only")
    val_images: int = setting(32, "images of the holdout or --eval-store each validation scores")
    eval_images: int = setting(64, "images evaluated at the end (0 = all)")
    stop_at: int = setting(0, "stop at this step with a checkpoint, as a pre-empted node would (0 = run to the end)")
    ddp_timeout: float = setting(
        300.0, "seconds a rank waits for the others (torchrun): then a lost or frozen rank ends the run in one line"
    )
    sample_log: str = setting("", "a local folder: each rank appends the images of each of its batches (an audit)")

    def __post_init__(self):
        spec = spec_of(self.variant)
        for name, value in spec.recipe.items():  # what is not given is the system's paper's (docs/training.md)
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        super().__post_init__()
        choices = {"head": ("heads", spec.heads), "recovery": ("recoveries", spec.recoveries)}
        choices["optimizer"] = ("optimizers", ("sgd", "adam"))
        choices["schedule"] = ("schedules", ("poly", "step"))
        own = {"optimizer": spec.optimizer, "schedule": spec.schedule}
        for name, (plural, allowed) in choices.items():
            value = getattr(self, name) or own.get(name, allowed[0])
            if value not in allowed:
                raise Refused(f"{self.variant} takes the {plural} {', '.join(allowed)}, not {value!r}")
            object.__setattr__(self, name, value)  # the resolved settings are the ones saved
        check_width(self.width)
        if self.size < spec.stride or self.size < 4:
            raise Refused(f"size must be at least {max(spec.stride, 4)} for {self.variant}, got {self.size}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Numbers a run cannot use, refused before anything is written (written `not a < x` so nan fails too)."""
        at_least = {"epochs": 1, "steps": 0, "ckpt_every": 1, "log_every": 1, "keep": 0,
                    "eval_every": 0, "val_images": 0, "eval_images": 0, "pretrain_steps": -1, "stop_at": 0}  # fmt: skip
        for name, low in at_least.items():
            if not getattr(self, name) >= low:
                raise Refused(f"{name} must be >= {low}, got {getattr(self, name)}")
        positive = ("lr", "lr_pow")
        non_negative = ("lam_col", "lam_cls", "lam_l1", "lr_d", "momentum", "weight_decay", "prior_sigma")
        for name in positive + non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if name in positive else value >= 0)):
                raise Refused(f"{name} must be a finite number {'>' if name in positive else '>='} 0, got {value}")
        if not (self.balance_lambda == -1 or 0 <= self.balance_lambda <= 1):
            raise Refused(f"balance_lambda must be in [0, 1] (or -1, the store's), got {self.balance_lambda}")
        if self.prior:
            read_prior(self.place(self.prior))
        if not 0 < self.lr_step <= 1:
            raise Refused(f"lr_step must be in (0, 1], got {self.lr_step}")
        if not 0 <= self.label_smoothing < 0.5:
            raise Refused(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not 0 < self.ddp_timeout <= 86400:
            raise Refused(f"ddp_timeout must be in (0, 86400] seconds, got {self.ddp_timeout}")
        if not 0 <= self.holdout < 1:
            raise Refused(f"holdout must be in [0, 1), got {self.holdout}")
        parse_bytes(self.cache_limit), parse_bytes(self.preload)
        parse_options(self.storage_option)  # a credential among them is refused

    def place(self, text: str):
        """A path or URL the run reads or writes, as a location that carries the run's storage options."""
        return location(text, parse_options(self.storage_option))


def read_config(path: str | Path) -> dict:
    """The settings of a JSON or YAML file (a run's own config.json works): a mapping of known settings of the
    right types, or Refused in one line. YAML is read with the safe loader: tags that build objects are refused."""
    path = location(path)
    try:
        text = read_bounded(path, MAX_CONFIG).decode()
    except UnicodeDecodeError:
        raise Refused(f"--config {path}: not a text file") from None
    except TooLarge:
        raise Refused(f"--config {path}: more than {MAX_CONFIG >> 20} MiB, not a file of settings") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except RecursionError:
            raise Refused(f"--config {path}: nested too deeply to be a file of settings") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = one_line(getattr(e, "problem", None) or e)
            raise Refused(f"--config {path}: not valid YAML{where}: {problem}") from None
    else:
        try:
            values = json.loads(text)
        except RecursionError:
            raise Refused(f"--config {path}: nested too deeply to be a file of settings") from None
        except json.JSONDecodeError as e:
            raise Refused(f"--config {path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise Refused(f"--config {path}: expected a mapping of settings, found a {type(values).__name__}")
    check_values(TrainConfig, values, f"--config {path}")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The flags given, over --config FILE, over the defaults (a store given) or the embedded default's preset."""
    options = parse_options(getattr(args, "storage_option", ()))
    base = read_config(location(args.config, options)) if getattr(args, "config", None) else {}
    flags = base | given(args, TrainConfig)
    if flags.get("store"):
        return TrainConfig(**flags)
    preset = dict(EMBEDDED)
    if spec_of(flags.get("variant", "full")).optimizer != "sgd":
        del preset["lr"]  # the preset's rate is the AFF nets' on SGD: an Adam net keeps its own
    return TrainConfig(**(preset | flags))
