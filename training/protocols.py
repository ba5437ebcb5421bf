"""The evaluation protocols of the colorization literature: which ImageNet validation images, cropped and resized
how. Sources and reasoning: docs/evaluation.md.

- `val5k`: ILSVRC2012_val_00000001 to _00005000, each centre-cropped to its shorter side, then resized to 256 x 256
  (CT2's loader; ColorFormer, DDColor and MultiColor report on it);
- `val50k`: all 50,000, each resized to 256 x 256 without a crop (ColorFormer's, DDColor's val50k);
- `store`: a store's own held-out centre crops (`colorize-evaluate --store`).

The images are read where the preprocessing flow reads them: ImageNet's val folder, its val archive
(ILSVRC2012_img_val.tar, in place), shards, locally or in a bucket (`pipeline.layouts`).
"""

import io
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.common.cli import Refused

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


@dataclass(frozen=True)
class Protocol:
    name: str
    first: int  # images ILSVRC2012_val_00000001 .. first
    crop: bool  # centre crop to the shorter side before resizing
    size: int
    about: str


PROTOCOLS = {
    "val5k": Protocol("val5k", 5000, True, 256, "the first 5,000 ImageNet validation images, centre-cropped to "
                      "their shorter side and resized to 256 x 256 (bilinear)"),
    "val50k": Protocol("val50k", 50000, False, 256, "the 50,000 ImageNet validation images, each resized to "
                       "256 x 256 (bilinear) without a crop"),
}  # fmt: skip
NAMES = ("store", *PROTOCOLS)


def number(path: str) -> int | None:
    """The validation image's number in ILSVRC2012_val_NNNNNNNN, or None for another name."""
    name = path.rsplit("/", 1)[-1]
    found = VAL_NAME.fullmatch(name.rsplit(".", 1)[0]) if "." in name else VAL_NAME.fullmatch(name)
    return int(found.group(1)) if found else None


def select(source: str, split: str, protocol: Protocol, limit: int = 0):
    """(root, sources, copies): the protocol's images found under `source` (a root with `split`/, the split's
    folder itself, or an archive), in number order, at most `limit` (0 = all), and the second copies of any."""
    from pipeline.config import PreprocessConfig
    from pipeline.imagenet import archive_source
    from pipeline.layouts import find
    from pipeline.storage import location

    where = source = location(source)  # with its storage options, which reach every image
    if not where.is_dir() and not where.is_file():
        raise Refused(f"--source {source}: no such folder or archive")
    if where.is_dir() and not (where / split).exists() and where.name == split:  # the split's folder itself
        source = where.parent
    try:
        cfg = archive_source(PreprocessConfig(source=source, split=split))
        found = find(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise Refused(f"--source {source}: {e}") from None
    by_number, copies = {}, []
    for src in found.sources:
        k = number(src.path)
        if k is not None and 1 <= k <= protocol.first:
            if k in by_number:  # a second copy (another folder, a shard) is not a new image: said, not measured
                copies.append({"path": src.path, "reason": f"a second copy of {by_number[k].path}"})
            by_number.setdefault(k, src)
    if not by_number:
        raise Refused(f"--source {source}: no ImageNet validation images (ILSVRC2012_val_NNNNNNNN.JPEG) among "
                      f"the {len(found.sources)} files of its {cfg.split} ({found.layout} layout)")  # fmt: skip
    numbers = sorted(by_number)[: limit or None]
    return cfg.source, [by_number[k] for k in numbers], copies


def shortfall(protocol: Protocol, measured: int) -> str:
    """What a report must say when fewer than the protocol's images were measured ("" when all were)."""
    if measured >= protocol.first:
        return ""
    return (
        f"{protocol.first - measured:,} of the protocol's {protocol.first:,} images were not measured (not in "
        "the source, left out or skipped): the figures are not comparable with published ones"
    )


def prepare(data: bytes, protocol: Protocol) -> np.ndarray:
    """uint8 (size, size, 3) of an encoded photo: RGB, centre-cropped as the protocol says, resized bilinearly
    by PIL (torchvision's Resize on a PIL image). Refused when it does not decode."""
    from PIL import Image

    from pipeline.decode import DEFAULT_MAX_PIXELS

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > DEFAULT_MAX_PIXELS:
                raise Refused(f"{img.width} x {img.height} pixels, past the decoder's bound")
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise Refused(f"not a decodable image ({type(e).__name__}: {e})") from None
    if protocol.crop:
        side = min(rgb.size)
        left, top = int(round((rgb.width - side) / 2.0)), int(round((rgb.height - side) / 2.0))
        rgb = rgb.crop((left, top, left + side, top + side))
    return np.asarray(rgb.resize((protocol.size, protocol.size), Image.BILINEAR), dtype=np.uint8)


def batches(root, sources: list, protocol: Protocol, batch: int, skipped: list):
    """(names, uint8 (B, size, size, 3)) of the sources in order; what cannot be read or decoded is appended to
    `skipped` as {"path", "reason"}, never dropped silently."""
    from pipeline.discover import read_sources
    from pipeline.storage import location

    with ThreadPoolExecutor(max(2, location(root).parallel(16))) as pool:
        for s in range(0, len(sources), batch):
            part = sources[s : s + batch]
            names, images = [], []
            for src, (data, why) in zip(part, read_sources(root, part, pool), strict=True):
                try:
                    if data is None:
                        raise ValueError(why)
                    images.append(prepare(data, protocol))
                    names.append(src.path)
                except ValueError as e:
                    skipped.append({"path": src.path, "reason": str(e)})
            if images:
                yield names, np.stack(images)
