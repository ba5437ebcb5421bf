"""Bad and awkward input files, generated (never committed): each kind with what the pipeline must do."""

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# kind -> expected outcome: "stored", or the `kind` of the skip record.
EXPECTED = {
    "truncated": "truncated",
    "zero_byte": "empty",
    "text": "not_image",
    "png_named_jpeg": "stored",
    "cmyk": "stored",
    "grayscale": "grayscale",
    "rgba": "stored",
    "png16_rgb": "stored",
    "png16_gray": "grayscale",
    "exif_rotated": "stored",
    "one_pixel": "stored",
    "bomb": "bomb",
}


def _photo(rng: np.random.Generator, h: int = 120, w: int = 160) -> Image.Image:
    """A smooth colourful image (gradients and blobs), so that JPEG treats it like a photo."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    k = rng.uniform(1, 4, size=3)
    rgb = np.stack([np.sin(k[0] * x * 6) * 0.5 + 0.5, np.cos(k[1] * y * 5) * 0.5 + 0.5, (x + y) / 2 * k[2] % 1], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG, written by hand: Pillow cannot write one."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    h, w, _ = arr.shape
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make(kind: str, rng: np.random.Generator) -> bytes:
    """The bytes of one file of `kind` (see EXPECTED)."""
    img = _photo(rng)
    if kind == "truncated":
        data = _jpeg(img)
        return data[: len(data) // 2]
    if kind == "zero_byte":
        return b""
    if kind == "text":
        return b"this is not an image\n" * 10
    if kind == "png_named_jpeg":
        return _png(img)
    if kind == "cmyk":
        return _jpeg(img.convert("CMYK"))
    if kind == "grayscale":
        return _jpeg(img.convert("L"))
    if kind == "rgba":
        rgba = img.convert("RGBA")
        rgba.putalpha(200)
        return _png(rgba)
    if kind == "png16_rgb":
        return png16_rgb(np.asarray(img).astype(np.uint16) * 257)
    if kind == "png16_gray":
        arr = (np.asarray(img.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
        return _png(Image.fromarray(arr))
    if kind == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        return _jpeg(img, exif=exif.tobytes())
    if kind == "one_pixel":
        return _jpeg(Image.new("RGB", (1, 1), (200, 30, 40)))
    if kind == "bomb":
        return _png(Image.new("1", (20000, 20000)))  # 400 M pixels in a few kB
    raise ValueError(kind)


def write_corpus(folder: Path, seed: int = 0) -> dict[str, str]:
    """Write one file of every kind into `folder` as <kind>.JPEG, plus file-system faults; returns
    {file name: expected outcome}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for kind, expected in EXPECTED.items():
        name = f"{kind}.JPEG"
        (folder / name).write_bytes(make(kind, rng))
        out[name] = expected
    # File-system faults: a link to nothing, a directory link looping to its parent, a file nobody may read.
    (folder / "dangling_link.JPEG").symlink_to(folder / "does-not-exist.JPEG")
    out["dangling_link.JPEG"] = "unreadable"
    (folder / "loop").symlink_to(folder)  # not followed: it lists no file
    if os.geteuid() != 0:  # root reads anything: the permission fault cannot be staged for it
        locked = folder / "no_permission.JPEG"
        locked.write_bytes(make("grayscale", rng))
        locked.chmod(0)
        out[locked.name] = "unreadable"
    return out
