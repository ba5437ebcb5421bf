"""`PreprocessConfig`: every setting that decides a store's content (saved in its attributes), and the flow's
parameters and flags."""

import json
from dataclasses import asdict, dataclass, replace

from pipeline.common.cli import Refused
from pipeline.common.settings import setting
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.discover import read_classes
from pipeline.layouts import LAYOUTS
from pipeline.storage import location
from pipeline.store.arrays import L_CODECS


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides a store's content (saved in its attributes); the flow's parameters and flags."""

    source: str = setting(help="ImageNet-layout root (SOURCE/SPLIT/<class>/<files>), or one archive or shard")
    split: str = setting("train", "the split folder under SOURCE")
    layout: str = setting(
        "auto",
        "classes (SPLIT/<wnid>/*), flat (SPLIT/*), list (--list), tar (WebDataset, ImageNet's archives), "
        "parquet (Hugging Face shards)",
    )
    labels: str | None = setting(None, "flat layout: a labels file (default: SOURCE/LOC_val_solution.csv)")
    list: str | None = setting(None, "a file of paths relative to SOURCE, one per line, a wnid after each")
    size: int = setting(224, "canonical size S (a multiple of 4)")
    classes: tuple[str, ...] | str | None = setting(None, "class subset: comma-separated wnids or a file of them")
    per_class: int | None = setting(None, "at most this many files per class (seeded draw)")
    seed: int = setting(0, "seed of the per-class draw")
    grayscale: str = setting("exclude", "exclude or include grayscale photos")
    lam: float = setting(0.5, "lambda of the balance weights (Eq. 10)")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "larger images are skipped as decompression bombs")
    part_images: int | None = setting(
        None, "files per task (default: parts of <= 2,048 files, a multiple of 4 of them)"
    )
    shard_images: int = setting(64, "images per Zarr shard")
    zstd_level: int = setting(1, "zstd level of bins and label (and of L with --l-codec zstd)")
    l_codec: str = setting(
        "med_rans", "L's codec: med_rans (smallest; needs this package to read) or zstd (any reader)"
    )
    decoder: str = setting("auto", "auto (mixed when a GPU is present), cpu or mixed")

    def located(self, options: dict | None = None) -> "PreprocessConfig":
        """This config with SOURCE, --labels and --list as locations that carry the run's storage options: they
        travel with it, to the workers too."""
        where = {k: location(v, options) for k in ("source", "labels", "list") if (v := getattr(self, k))}
        return replace(self, **where)

    def record(self) -> dict:
        """The settings as a store records them: locations as their text."""
        return json.loads(json.dumps(asdict(self), default=str))

    def __post_init__(self):
        if isinstance(self.classes, str):  # from a flag or a deployment parameter
            object.__setattr__(self, "classes", read_classes(self.classes))
        if self.size < 4 or self.size % 4:
            raise Refused(f"size must be a positive multiple of 4 (targets are at size / 4), got {self.size}")
        if self.grayscale not in ("exclude", "include"):
            raise Refused(f"grayscale must be 'exclude' or 'include', got {self.grayscale!r}")
        if self.per_class is not None and self.per_class < 1:
            raise Refused(f"per_class must be >= 1, got {self.per_class}")
        if not 0.0 <= self.lam <= 1.0:
            raise Refused(f"lam must be in [0, 1], got {self.lam}")
        if self.max_pixels < 1:
            raise Refused(f"max_pixels must be >= 1, got {self.max_pixels}")
        if not -(1 << 17) <= self.zstd_level <= 22:  # zstd's own range: negative levels are its fast ones
            raise Refused(f"zstd_level must be in [-131072, 22], got {self.zstd_level}")
        if (self.part_images is not None and self.part_images < 1) or self.shard_images < 1:
            raise Refused("part_images (when given) and shard_images must be >= 1")
        if self.layout not in LAYOUTS:
            raise Refused(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.list and self.layout not in ("auto", "list"):
            raise Refused(f"--list goes with --layout list, not {self.layout}")
        if self.l_codec not in L_CODECS:
            raise Refused(f"l_codec must be one of {', '.join(L_CODECS)}, got {self.l_codec!r}")
        if self.decoder not in ("auto", "cpu", "mixed"):
            raise Refused(f"decoder must be 'auto', 'cpu' or 'mixed', got {self.decoder!r}")
