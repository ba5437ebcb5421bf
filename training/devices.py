"""Which device a command runs on: `auto` is the CUDA device when there is one (this process's local rank's
under torchrun), else the CPU; anything else is a torch device string (`cpu`, `cuda`, `cuda:1`)."""

import torch

from pipeline.common.cli import Refused


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise Refused(f"unknown device {spec!r}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Refused(f"device {spec!r} asked for, but torch sees no CUDA device here")
    return device
