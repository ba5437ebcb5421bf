"""A model folder in the Hugging Face layout: `model.safetensors` (the weights, no pickle), `config.json`
(everything inference needs, and where the weights came from), `README.md` (the model card,
`training.modelcard`), and with `--onnx` `model.onnx` (`training.onnx_export`).

A folder is read as data only: safetensors and JSON. A pickled file in it (`pytorch_model.bin`, `*.pt`, ...) is
refused, since loading a pickle can run code; the project's own checkpoints load through `training.checkpoint`
with `weights_only`. A folder whose config or weights do not make a registered model is refused in one line.
"""

import torch

from pipeline.common.cli import one_line
from pipeline.storage import location
from training.checkpoint import CheckpointError
from training.loss import AB_SCALE, T_DEFAULT
from training.modelconfig import FORMAT, MAX_CONFIG, number, out_of_bounds, read_json  # noqa: F401 - re-exported
from training.models import create_model, spec_of

WEIGHTS, CONFIG, CARD, ONNX = "model.safetensors", "config.json", "README.md", "model.onnx"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def is_model_folder(path) -> bool:
    """Whether `path` (a folder or a URL prefix) holds a model folder's config.json."""
    p = location(path)
    try:
        return (p / CONFIG).exists()  # a FIFO or a folder there is refused by read_config, not taken for a file
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
        "prior": cfg.get("prior")
        or (
            f"the training store's own, smoothed by a Gaussian of sigma {cfg['prior_sigma']:g} (Eq. 9's p~)"
            if cfg.get("prior_sigma")
            else "the training store's own (Eq. 9)"
        ),
        "balance_lambda": cfg.get("balance_lambda"),
        "training": {
            "step": step,
            "images_seen": step * int(cfg.get("batch_size", 0)),
            "store": state.get("store") or {"path": cfg.get("store")},
        },  # fmt: skip
        "train_config": cfg,
    }


def _store(state: dict, cfg: dict) -> dict:
    """The training store's fingerprint as the checkpoint records it (text and numbers only), else its path."""
    store = state.get("store")
    if isinstance(store, dict) and isinstance(store.get("path"), str) and isinstance(store.get("build_id"), str):
        return {"path": store["path"], "build_id": store["build_id"], "images": int(store.get("images") or 0)}
    return {"path": str(cfg.get("store"))}


def weights_bytes(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, metadata={"format": "pt"})


def check_folder(path) -> None:
    """Refuse a folder holding a pickle: it is read as data only."""
    folders, files = location(path).entries()
    names = folders + files
    if pickled := sorted(n for n in names if n.lower().endswith(PICKLES)):
        raise CheckpointError(f"{path} holds {pickled[0]}, a pickle: a model folder is read as data only "
                              "(model.safetensors and config.json); give a checkpoint of this project as a file "
                              "instead, which loads as tensors only")  # fmt: skip


def read_config(path) -> dict:
    try:
        config = read_json(location(path) / CONFIG)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/{CONFIG} does not read as JSON ({one_line(e)[:160]})") from None
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or not isinstance(config.get("train_config"), dict)
    ):
        raise CheckpointError(f"{path}/{CONFIG} is not a model folder's config of this project (no format "
                              f"{FORMAT!r} with its train_config)")  # fmt: skip
    if problem := out_of_bounds(config):
        raise CheckpointError(f"{path}/{CONFIG}: {problem}")
    return config


def read_folder(path) -> tuple[dict, dict]:
    """(config, weights by name) of a model folder, local or in a bucket, read as data: a folder holding a pickle,
    a config out of bounds or weights that are not safetensors refused in one line (CheckpointError)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    from pipeline.storage.files import read_file

    check_folder(path)
    config = read_config(path)
    try:
        return config, load_bytes(read_file(location(path) / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}/{WEIGHTS} does not read as safetensors ({one_line(e)[:160]})") from None


def load_folder(path, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """(model in eval mode on `device`, its training config, its step) from a model folder, local or in a bucket;
    CheckpointError, one line, for a folder that is not one or whose weights do not fit. The weights are checked
    against the model built on the meta device, so a forged folder allocates nothing."""
    from training.devices import resolve_device

    config, weights = read_folder(path)
    try:
        with torch.device("meta"):
            meta = create_model(config["system"], config["width"], config["head"], int(config["n_classes"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config does not name a model this program builds ({one_line(e)})") from None
    if difference := first_difference(meta.state_dict(), weights):
        system = config["system"]
        raise CheckpointError(f"{path}/{WEIGHTS}: its weights do not fit the {system} it names ({difference})")
    model = create_model(config["system"], config["width"], config["head"], int(config["n_classes"]))
    model.load_state_dict(weights)
    cfg = dict(config["train_config"]) | {"variant": config["system"], "width": config["width"]}
    cfg |= {"head": config["head"], "size": config["input"]["size"], "recovery": config["recovery"]}
    return model.eval().to(resolve_device(device)), cfg, int(config["training"]["step"])


def first_difference(want: dict, got) -> str | None:
    """The first layer (in the model's order) whose weights are missing, extra, not a tensor, or of another shape or
    dtype."""
    if not isinstance(got, dict):
        return f"the weights are a {type(got).__name__}, not tensors by name"
    for key, value in want.items():
        if key not in got:
            return f"{key} is missing"
        if not isinstance(got[key], torch.Tensor):
            return f"{key} is a {type(got[key]).__name__}, not a tensor"
        if tuple(got[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(got[key].shape)}, the model {tuple(value.shape)}"
        if got[key].dtype != value.dtype:
            return f"{key} is {got[key].dtype}, the model {value.dtype}"
    if extra := [k for k in got if k not in want]:
        return f"{extra[0]} is not a layer of it"
    return None
