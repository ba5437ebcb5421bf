"""A model folder in the Hugging Face layout: `model.safetensors` (the weights, no pickle), `config.json`
(everything inference needs, and where the weights came from), `README.md` (the model card,
`training.modelcard`), and with `--onnx` `model.onnx` (`training.onnx_export`).

A folder is read as data only: safetensors and JSON. A pickled file in it (`pytorch_model.bin`, `*.pt`, ...) is
refused, since loading a pickle can run code; the project's own checkpoints load through `training.checkpoint`
with `weights_only`. A folder whose config or weights do not make a registered model is refused in one line.
"""

import json

import torch

from pipeline.common.cli import one_line
from pipeline.common.storage import is_url, location
from training.checkpoint import CheckpointError
from training.loss import AB_SCALE, T_DEFAULT
from training.models import create_model, spec_of

WEIGHTS, CONFIG, CARD, ONNX = "model.safetensors", "config.json", "README.md", "model.onnx"
FORMAT = "colorize-model"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
MAX_CONFIG = 1 << 20  # bytes of config.json: a real one is a few kB


def is_model_folder(path) -> bool:
    """Whether `path` (a folder or a URL prefix) holds a model folder's config.json."""
    p = location(path) if is_url(str(path)) else location(str(path))
    try:
        return (p / CONFIG).is_file()
    except OSError:
        return False


def has_class_output(model: torch.nn.Module, size: int) -> bool:
    """Whether the model gives image class logits beside the colour (run on the meta device: no compute)."""
    import copy

    with torch.device("meta"):
        meta = copy.deepcopy(model).to("meta").eval()
        return meta(torch.empty(1, 1, size, size))[1] is not None


def model_config(state: dict, model: torch.nn.Module) -> dict:
    """config.json of a checkpoint's contents: the system, the input and its normalisation, the colour recovery
    and its T, the prior it was trained with, where it was trained and for how long, and the whole training
    config (for fine-tuning from it)."""
    cfg, step = state["config"], int(state["step"])
    spec = spec_of(cfg["variant"])
    head = cfg.get("head") or spec.heads[0]
    regress = head in ("l1", "l2")
    return {
        "format": FORMAT,
        "format_version": 1,
        "system": cfg["variant"],
        "paper": spec.paper,
        "width": cfg["width"],
        "head": head,
        "n_classes": int(state.get("n_classes", 1000)),
        "input": {
            "name": "L",
            "shape": ["batch", 1, "height", "width"],
            "multiple_of": 32,
            "size": cfg["size"],
            "normalisation": "CIE L (D65) in [0, 100], divided by 100",
        },  # fmt: skip
        "outputs": {
            "colour": "(a, b) / ab_scale"
            if regress
            else "logits over the 313 (a, b) categories, at height/4 x width/4",
            "class": "image class logits" if has_class_output(model, cfg["size"]) else None,
        },
        "recovery": cfg.get("recovery") or spec.recoveries[0],
        "recoveries": list(spec.recoveries),
        "T": T_DEFAULT,
        "ab_scale": AB_SCALE,
        "prior": cfg.get("prior") or "the training store's own (Eq. 9)",
        "balance_lambda": cfg.get("balance_lambda"),
        "training": {
            "step": step,
            "images_seen": step * int(cfg.get("batch_size", 0)),
            "store": state.get("store") or {"path": cfg.get("store")},
        },  # fmt: skip
        "train_config": cfg,
    }


def weights_bytes(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, metadata={"format": "pt"})


def check_folder(path) -> None:
    """Refuse a folder holding a pickle: it is read as data only."""
    folder = location(str(path))
    names = [p.name for p in folder.iterfiles()] if is_url(str(path)) else [p.name for p in folder.iterdir()]
    if pickled := sorted(n for n in names if n.lower().endswith(PICKLES)):
        raise CheckpointError(f"{path} holds {pickled[0]}, a pickle: a model folder is read as data only "
                              "(model.safetensors and config.json); give a checkpoint of this project as a file "
                              "instead, which loads as tensors only")  # fmt: skip


def read_config(path) -> dict:
    folder = location(str(path))
    try:
        data = (folder / CONFIG).read_bytes()
        config = json.loads(data) if len(data) <= MAX_CONFIG else None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/{CONFIG} does not read as JSON ({one_line(e)[:160]})") from None
    if config is None:
        raise CheckpointError(f"{path}/{CONFIG}: {len(data):,} bytes, more than a model's config holds")
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or not isinstance(config.get("train_config"), dict)
    ):
        raise CheckpointError(f"{path}/{CONFIG} is not a model folder's config of this project (no format "
                              f"{FORMAT!r} with its train_config)")  # fmt: skip
    if problem := _out_of_bounds(config):
        raise CheckpointError(f"{path}/{CONFIG}: {problem}")
    return config


def _out_of_bounds(config: dict) -> str | None:
    """What in a config no model of this project has, checked before a model is built from it (a forged number of
    classes would otherwise allocate a classifier of that size)."""
    from pipeline.labels import MAX_CLASSES

    def number(v, kind=int) -> bool:
        return isinstance(v, kind) and not isinstance(v, bool) and v == v  # noqa: PLR0124 - nan is not a number here

    size = config["input"].get("size") if isinstance(config.get("input"), dict) else None
    checks = {
        "n_classes": number(config.get("n_classes")) and 1 <= config["n_classes"] <= MAX_CLASSES,
        "width": number(config.get("width"), (int, float)) and 0 < config["width"] <= 4,
        "input.size": number(size) and 32 <= size <= 8192 and size % 32 == 0,
        "system": isinstance(config.get("system"), str),
        "head": isinstance(config.get("head"), str),
        "recovery": isinstance(config.get("recovery"), str),
        "training.step": isinstance(config.get("training"), dict) and number(config["training"].get("step")),
    }
    bad = [k for k, ok in checks.items() if not ok]
    return f"{bad[0]} is missing or out of bounds" if bad else None


def load_folder(path, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """(model in eval mode on `device`, its training config, its step) from a model folder, local or in a bucket;
    CheckpointError, one line, for a folder that is not one or whose weights do not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    from training.devices import resolve_device

    check_folder(path)
    config = read_config(path)
    cfg = dict(config["train_config"])
    try:
        model = create_model(config["system"], config["width"], config["head"], int(config["n_classes"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config does not name a model this program builds ({one_line(e)})") from None
    try:
        weights = load_bytes((location(str(path)) / WEIGHTS).read_bytes())
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}/{WEIGHTS} does not read as safetensors ({one_line(e)[:160]})") from None
    fit_weights(model, weights, f"{path}/{WEIGHTS}", config["system"])
    cfg |= {"variant": config["system"], "width": config["width"], "head": config["head"]}
    cfg |= {"size": config["input"]["size"], "recovery": config["recovery"]}
    return model.eval().to(resolve_device(device)), cfg, int(config["training"]["step"])


def fit_weights(model: torch.nn.Module, weights: dict, where: str, system: str) -> None:
    """Load `weights` into `model` exactly; the first key or shape that does not fit refused in one line."""
    if difference := first_difference(model.state_dict(), weights):
        raise CheckpointError(f"{where}: its weights do not fit the {system} it names ({difference})")
    model.load_state_dict(weights)


def first_difference(want: dict, got: dict) -> str | None:
    """The first layer (in the model's order) whose weights are missing, extra or of another shape."""
    for key, value in want.items():
        if key not in got:
            return f"{key} is missing"
        if tuple(got[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(got[key].shape)}, the model {tuple(value.shape)}"
    if extra := [k for k in got if k not in want]:
        return f"{extra[0]} is not a layer of it"
    return None
