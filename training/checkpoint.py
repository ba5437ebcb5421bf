"""Checkpoints: written atomically (temp file, fsync, rename), so a crash or a full disk while saving leaves
the previous checkpoint intact; each holds the model, optimizer, step, RNG states and the resolved config."""

import os
from pathlib import Path

import torch

from training.model import ColorNet, ModelConfig


def save(path: Path, state: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged file gets one clear message
        raise RuntimeError(f"{path} is not a readable checkpoint: {type(e).__name__}: {e}") from e


def load_model(path: str | Path) -> tuple[ColorNet, dict, int]:
    """(model in eval mode on the CPU, its training config as a dict, its step) from a checkpoint."""
    state = load(path)
    cfg = state["config"]
    model = ColorNet(ModelConfig(cfg["variant"], cfg["head"], cfg["width"], state.get("n_classes", 1000)))
    model.load_state_dict(state["model"])
    return model.eval(), cfg, int(state["step"])
