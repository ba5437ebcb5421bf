"""Checkpoints: written whole or not at all (locally a temp file, fsync and rename; in an object store one PUT),
so a crash, a full disk or a lost connection while saving leaves the previous checkpoint intact; each holds the
model, optimizer, step, RNG states and the resolved config. They load from a path or a URL (s3://, gs://, az://)."""

import io
import pickle
import warnings
from pathlib import Path

import torch

from pipeline.common.cli import Refused, Unusable, one_line
from pipeline.storage import location
from pipeline.storage.files import atomic_write
from training.models import N_CLASSES, create_model


def save(path, state: dict) -> None:
    atomic_write(location(path), lambda f: torch.save(state, f))


class CheckpointError(Unusable):
    """A file that is not a checkpoint this program can use; the message names the file and why, in one line."""


KEYS = ("model", "config", "step")  # what every checkpoint of a run holds, beside its optimiser states


def load(path: str | Path) -> dict:
    """A checkpoint's contents, loaded with weights_only: tensors, numbers, strings and lists, never objects whose
    loading runs code. Anything else is refused in one line."""
    path = location(path)
    try:
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}" + (" (a folder)" if path.is_dir() else ""))
        source = path.local or io.BytesIO(path.read_bytes())  # a local file is mapped, not read whole
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({one_line(e)[:200]})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # the safe loader met an object built by running code
            raise CheckpointError(f"{path} holds objects other than tensors and plain values: refused, because "
                                  "loading them could run code") from None  # fmt: skip
        raise CheckpointError(f"{path} is not a checkpoint file (not written by torch.save, or damaged)") from None
    except RuntimeError as e:
        if "PytorchStreamReader" in str(e) or "zip archive" in str(e):
            raise CheckpointError(f"{path} is not a whole checkpoint file (cut short or damaged)") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (RuntimeError: {one_line(e)[:120]})") from None
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file gets one clear message
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {one_line(e)[:200]})") from e
    if not isinstance(state, dict) or not all(k in state for k in KEYS) or not isinstance(state["config"], dict):
        keys = ", ".join(map(str, state))[:80] if isinstance(state, dict) else ""
        what = f"keys {keys}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path} is not a checkpoint of this project (found {what})")
    return state


def add_model_arguments(parser) -> None:
    """The flags of the commands that run a trained model: which checkpoint, which recovery, which device."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint of a run (checkpoint-last.pt), a path or a URL")
    source.add_argument("--model", dest="checkpoint", metavar="DIR_OR_URL",
                        help="a model folder written by colorize-export (model.safetensors, config.json)")  # fmt: skip
    parser.add_argument("--recovery", choices=("argmax", "annealed", "regression"), help="default: the run's own")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")


def recovery_of(cfg: dict, asked: str | None) -> str:
    """The colour recovery to use: `asked`, if the model takes it, else the run's own."""
    from training.models import spec_of

    allowed = spec_of(cfg["variant"]).recoveries
    if asked and asked not in allowed:
        raise Refused(f"{cfg['variant']} takes the recoveries {', '.join(allowed)}, not {asked!r}")
    return asked or cfg.get("recovery") or allowed[0]


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """(model in eval mode on `device` (`training.devices.resolve_device`), its training config as a dict, its
    step) from a checkpoint or a model folder; CheckpointError if its settings or weights do not make a
    registered model."""
    from training.devices import resolve_device
    from training.modelfolder import is_model_folder, load_folder

    if is_model_folder(path):
        return load_folder(path, device)
    target = resolve_device(device)
    state = load(path)
    cfg = state["config"]
    try:
        model = create_model(cfg["variant"], cfg["width"], cfg["head"], int(state.get("n_classes", N_CLASSES)))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config does not name a model this program builds ({one_line(e)})") from None
    size = cfg.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
        raise CheckpointError(f"{path}: its config's size {size!r} is not a positive multiple of 32")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = one_line(e).split(". ")[0][:160]
        raise CheckpointError(f"{path}: its weights do not fit the {cfg['variant']} it names ({first})") from None
    return model.eval().to(target), cfg, int(state["step"])
