"""The optional parts of the install (pyproject.toml's extras) and a clear error when one is missing.

The core (`pip install colorize`) colorizes photos with a checkpoint and reads stores; `[train]` adds training
and evaluation (DALI re-decodes ground truth as the store's crops were made), `[pipeline]` the preprocessing
flow (Prefect, Dask), `[onnx]` colorizing through onnxruntime, `[export]` writing ONNX, `[fid]` FID through
clean-fid, `[dev]` everything and the tests.
"""

import importlib.util

from pipeline.common.cli import Refused

TRAIN = ("nvidia.dali", "tensorboard", "scipy", "skimage")
EXTRAS = {"train": TRAIN, "pipeline": (*TRAIN, "prefect", "distributed"), "onnx": ("onnxruntime",),
          "export": ("onnx", "onnxscript", "onnxruntime"), "fid": ("cleanfid", "requests")}  # fmt: skip


class MissingExtra(Refused, ImportError):
    """A command needs an extra that is not installed; the message names it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing parent package (nvidia for nvidia.dali)
        return False


def require(extra: str, what: str) -> None:
    """Raise MissingExtra, naming the extra to install, if a module of `extra` is not installed."""
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtra(
            f"{what} needs the '{extra}' extra, not installed here (missing: {', '.join(missing)}): "
            f"pip install 'colorize[{extra}]' (or python3 make.py test, which installs everything)"
        )
