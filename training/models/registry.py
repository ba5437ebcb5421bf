"""The registry of colorization systems (timm-style): a name -> how to build it, train it and recover colour.

Every model maps L (B, 1, H, W) in [0, 1] to (colour, class logits or None). The colour is either 313
category logits at H/4 (heads `classify`, `soft`) or (a, b) / AB_SCALE at any resolution (heads `l1`, `l2`,
regression); `training.loss` and `recover_ab` take both.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.common.cli import Refused

N_CLASSES = 1000  # ImageNet's classes: the classifier's outputs (Sec. 3.6), more if a store lists more
REGRESSION_HEADS = ("l1", "l2")


@dataclass(frozen=True)
class ModelSpec:
    """A registered system: its builder, the losses and recoveries it takes (the first is its own), its
    optimiser and rate schedule, the paper it comes from, and for GANs the discriminator and the fraction of
    the run that trains the generator alone first."""

    name: str
    build: Callable[[float, int, str], nn.Module]  # (width, n_classes, head) -> model
    heads: tuple[str, ...]
    recoveries: tuple[str, ...]
    optimizer: str  # "sgd" or "adam"
    paper: str  # the paper it comes from, by authors, year and title
    betas: tuple[float, float] = (0.9, 0.999)
    discriminator: Callable[[float], nn.Module] | None = None  # width -> D, for adversarial training
    schedule: str = "poly"  # "poly" (a reading of Wang et al.'s Eq. 21-23) or "step" (divided by 10 in steps)
    pretrain: float = 0.0  # GANs: the share of the steps with the reconstruction loss alone
    recipe: dict = None  # its paper's training settings (TrainConfig fields) over RECIPE; docs/training.md
    stride: int = 32  # the input's side must be a multiple of this (the network's total downsampling)

    def __post_init__(self):
        object.__setattr__(self, "recipe", RECIPE | (self.recipe or {}))

    def loss(self, head: str) -> str:
        return {
            "classify": "weighted cross-entropy over 313 bins (Eq. 19)",
            "soft": "soft-encoded cross-entropy, rebalanced (Zhang Eq. 1-4)",
            "l1": "L1 on ab",
            "l2": "L2 on ab",
        }[head] + (" + conditional GAN" if self.discriminator else "")


# Wang et al.'s Sec. 4.1 (SGD, 1e-3, momentum 0.9, weight decay 1e-4, batch 64, 224 x 224, 10 epochs); no paper
# of the registry flips its images except Zhang et al.'s released training. A system's `recipe` overrides these.
RECIPE = {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 64, "size": 224, "epochs": 10,
          "flip": False, "lr_step": 1 / 6, "lam_l1": 100.0, "lr_d": 0.0}  # fmt: skip
MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    MODELS[spec.name] = spec
    return spec


def spec_of(name: str) -> ModelSpec:
    if name not in MODELS:
        raise Refused(f"unknown model variant {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


def fit(size: int, stride: int) -> int:
    """The side a network of `stride` trains at for `size`: the largest multiple of its stride and of 4 (the
    targets' blocks) not above it; a larger `size` is centre-cropped to it (zhang16-liu's 150 -> 144)."""
    step = math.lcm(4, stride)
    return size - size % step


def check_width(width: float) -> None:
    """The channel multipliers every model takes: (0, 4], 1 being its paper's."""
    if not 0 < width <= 4:
        raise Refused(f"width must be in (0, 4], got {width}")


def create_model(name: str, width: float = 1.0, head: str = "", n_classes: int = N_CLASSES) -> nn.Module:
    """The model `name` at `width` (1 = its paper's) with loss head `head` ("" = its own)."""
    spec = spec_of(name)
    head = head or spec.heads[0]
    if head not in spec.heads:
        raise Refused(f"{name} takes the heads {', '.join(spec.heads)}, not {head!r}")
    check_width(width)
    return spec.build(width, n_classes, head)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str, size: int = 224) -> dict:
    """Parameters and forward GFLOPs at `size` (2 per multiply-add, on the meta device) of the paper-size
    model, with its discriminator's parameters, loss, recovery and paper."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = spec_of(name)
    with torch.device("meta"):
        model = create_model(name).eval()
        disc = spec.discriminator(1.0) if spec.discriminator else None
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 1, size, size, device="meta"))
    return {
        "name": name,
        "params": count_parameters(model),
        "discriminator_params": count_parameters(disc) if disc else 0,
        "gflops": counter.get_total_flops() / 1e9,
        "loss": spec.loss(spec.heads[0]),
        "recovery": ", ".join(spec.recoveries),
        "paper": spec.paper,
    }


def xavier_init(module: nn.Module) -> None:
    """Xavier normal initialisation of every convolution (Sec. 4.1 of Wang et al.; the others' default too)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
