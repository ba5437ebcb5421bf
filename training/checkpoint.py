"""Checkpoints: written atomically (temp file, fsync, rename), so a crash or a full disk while saving leaves
the previous checkpoint intact; each holds the model, optimizer, step, RNG states and the resolved config."""

from pathlib import Path

import torch

from pipeline.files import atomic_write
from training.models import N_CLASSES, create_model


def save(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file gets one clear message
        raise RuntimeError(f"{path} is not a readable checkpoint: {type(e).__name__}: {e}") from e


def add_model_arguments(parser) -> None:
    """The flags of the commands that run a trained model: which checkpoint, which recovery, which device."""
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--recovery", choices=("argmax", "annealed", "regression"), help="default: the run's own")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")


def recovery_of(cfg: dict, asked: str | None) -> str:
    """The colour recovery to use: `asked`, if the model takes it, else the run's own."""
    from training.models import spec_of

    allowed = spec_of(cfg["variant"]).recoveries
    if asked and asked not in allowed:
        raise ValueError(f"{cfg['variant']} takes the recoveries {', '.join(allowed)}, not {asked!r}")
    return asked or cfg.get("recovery") or allowed[0]


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """(model in eval mode on `device` (`training.devices.resolve_device`), its training config as a dict, its
    step) from a checkpoint."""
    from training.devices import resolve_device

    target = resolve_device(device)
    state = load(path)
    cfg = state["config"]
    model = create_model(cfg["variant"], cfg["width"], cfg["head"], state.get("n_classes", N_CLASSES))
    model.load_state_dict(state["model"])
    return model.eval().to(target), cfg, int(state["step"])
