"""A model's config.json, read and checked without torch (the ONNX runner reads the same config from its file's
metadata): every number a model of this project can have, bounded before anything is built or run from it."""

import json
import math

from pipeline.common.cli import Refused

FORMAT = "colorize-model"
ONNX_METADATA = "colorize_config"  # the key of the config in an exported model.onnx
MAX_CONFIG = 1 << 20  # bytes of config.json: a real one is a few kB
MAX_SIZE = 1024  # the largest training size a model folder may state: the network runs at it on every photo
HEADS = ("classify", "soft", "l1", "l2")
REAL = (int, float)
RECOVERIES = ("argmax", "annealed", "regression")


def read_json(path, limit: int = MAX_CONFIG):
    """A JSON file of a model folder or a run, read as data: a regular file (never a FIFO) of at most `limit` bytes;
    ValueError (a one-line reason) for anything else, deep nesting included."""
    from pipeline.storage.files import read_bounded

    try:
        return json.loads(read_bounded(path, limit))
    except RecursionError:
        raise Refused("nested too deeply") from None


def number(v, kind=int) -> bool:
    """A JSON number of `kind`, finite (not a bool, not NaN or infinity)."""
    return isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v)


def out_of_bounds(config: dict) -> str | None:
    """What in a model's config no model of this project has, checked before a model is built or run from it (a
    forged number of classes or input size would otherwise allocate accordingly)."""
    from pipeline.labels import MAX_CLASSES

    size = config["input"].get("size") if isinstance(config.get("input"), dict) else None
    tc = config.get("train_config")
    checks = {
        "n_classes": number(config.get("n_classes")) and 1 <= config["n_classes"] <= MAX_CLASSES,
        "width": number(config.get("width"), (int, float)) and 0 < config["width"] <= 4,
        "input.size": number(size) and 32 <= size <= MAX_SIZE and size % 32 == 0,
        "system": isinstance(config.get("system"), str),
        "head": config.get("head") in HEADS,
        "recoveries": isinstance(config.get("recoveries"), list) and all(r in RECOVERIES for r in config["recoveries"]),
        "recovery": isinstance(config.get("recoveries"), list) and config.get("recovery") in config["recoveries"],
        "T": number(config.get("T"), (int, float)) and 0.01 <= config["T"] <= 100,
        "ab_scale": number(config.get("ab_scale"), (int, float)) and 0 < config["ab_scale"] <= 1000,
        "training.step": isinstance(config.get("training"), dict) and number(config["training"].get("step")),
        "train_config.holdout": isinstance(tc, dict)
        and number(tc.get("holdout"), (int, float))
        and 0 <= tc["holdout"] < 1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    return f"{bad[0]} is missing or out of bounds" if bad else None
