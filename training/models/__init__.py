"""The registered colorization systems: `create_model(name, width, head)`, `MODELS`, `describe(name)`."""

from training.models import aff, cheng15, cunet, pix2pix, zhang16  # noqa: F401 - each module registers its models
from training.models.registry import (
    MODELS,
    N_CLASSES,
    REGRESSION_HEADS,
    ModelSpec,
    check_width,
    count_parameters,
    create_model,
    describe,
    fit,
    spec_of,
)

__all__ = ["MODELS", "N_CLASSES", "REGRESSION_HEADS", "ModelSpec", "check_width", "count_parameters", "create_model",
           "describe", "fit", "spec_of"]  # fmt: skip
