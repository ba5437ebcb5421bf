"""Fine-tuning: `colorize-train --init MODEL_OR_CHECKPOINT` starts from another run's weights (a model folder,
local or in a bucket, or a checkpoint file) with a fresh optimiser and schedule.

The weights must be those of the same system at the same width: anything else is refused in one line naming the
first layer that differs. Only the image classifier may differ, in its number of classes (a store of more than
1,000 classes): it then keeps its fresh initialisation, and the run says so. Photos without labels fine-tune
with the class loss off (Eq. 18 needs a label), as any run on an unlabelled store does.
"""

import torch

from pipeline.common.cli import Refused
from training import checkpoint, modelfolder

CLASSIFIER = "classifier."  # the image classification subnetwork's parameters (training.models.aff)


class InitMismatch(Refused):
    """--init weights that are not the run's system at its width."""


def read_init(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(the weights, {system, width, head}) of a model folder or a checkpoint, read as data."""
    if modelfolder.is_model_folder(path):
        config, weights = modelfolder.read_folder(path)
        return weights, {k: config[k] for k in ("system", "width", "head")}
    state = checkpoint.load(path)
    cfg = state["config"]
    return state["model"], {"system": cfg.get("variant"), "width": cfg.get("width"), "head": cfg.get("head")}


def _fit(own: dict, weights: dict, made: dict, variant: str, width: float, path: str) -> list[str]:
    """The classifier's keys to keep fresh (another number of classes); InitMismatch for any other difference."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InitMismatch(f"--init {path}: {modelfolder.first_difference(own, weights) or 'not tensors by name'}")
    fresh = [k for k in own if k.startswith(CLASSIFIER) and k in weights and weights[k].shape != own[k].shape]
    rest = {k: v for k, v in weights.items() if k not in fresh}
    difference = modelfolder.first_difference({k: v for k, v in own.items() if k not in fresh}, rest)
    if difference:
        what = f"a {made['system']} at width {made['width']}"
        raise InitMismatch(f"--init {path}: {what}, not the {variant} at width {width} this run trains "
                           f"({difference})")  # fmt: skip
    return fresh


def check_init(variant: str, width: float, head: str, path: str) -> None:
    """Refuse, before any work, --init weights that do not fit the run's model (built on the meta device)."""
    from training.models import create_model

    weights, made = read_init(path)
    with torch.device("meta"):
        own = create_model(variant, width, head).state_dict()
    _fit(own, weights, made, variant, width, path)


def initialise(model: torch.nn.Module, variant: str, width: float, path: str, say=print) -> None:
    """Load `path`'s weights into `model` (the run's `variant` at `width`), or refuse, naming the first layer that
    differs; a classifier of another number of classes stays freshly initialised, said with `say`."""
    weights, made = read_init(path)
    own = model.state_dict()
    fresh = _fit(own, weights, made, variant, width, path)
    model.load_state_dict({k: v for k, v in weights.items() if k not in fresh} | {k: own[k] for k in fresh})
    say(f"--init {path}: {made['system']} weights loaded; a fresh optimiser and schedule", flush=True)
    if fresh:
        n_old, n_new = weights[fresh[-1]].shape[0], own[fresh[-1]].shape[0]
        say(f"--init: the image classifier has {n_new} classes here, {n_old} there: re-initialised", flush=True)
