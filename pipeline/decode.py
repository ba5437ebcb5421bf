"""Stage 2, decoding: file bytes -> S x S uint8 RGB crops (shorter side resized to S with antialiasing, center crop).

Decoding, resizing and cropping run in NVIDIA DALI: `fn.decoders.image` on device "mixed" (nvJPEG on the
GPU) when a GPU is present, "cpu" otherwise, chosen when the pipeline is built. Before DALI sees a file,
`probe` reads its header with Pillow (no pixel data) to turn away, with a reason, what must not be decoded:
empty files, non-images, decompression bombs, truncated JPEGs, grayscale photos when they are excluded.

A DALI batch fails as a whole when one image in it fails; the batch is then decoded image by image, and
an image DALI cannot decode is decoded by Pillow and resized by the same DALI resize (its record says
`decoder: "pil"`), or skipped with both errors as its reason. One bad file never costs a good one.
"""

import functools
import io
import threading
from dataclasses import dataclass

import numpy as np

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;L"})
# The one pixel budget of every decoder of photos (the flow, colorize, the demo): memory grows with it, and a
# 24-megapixel camera's 6000 x 4000 still fits.
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class Probe:
    """What the header says; `reason` (and its `kind`) is set when the file must be skipped undecoded."""

    reason: str | None
    kind: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""

    @property
    def grayscale(self) -> bool:
        return self.mode in GRAY_MODES


def _jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose last scan (SOS marker) is not followed by an end-of-image marker was cut short.

    Searched from the last EOI, which ends a whole file: no SOS after it, and one before it (a backward search
    for the last SOS would cross the whole entropy-coded data).
    """
    eoi = data.rfind(b"\xff\xd9")
    return eoi < 0 or data.find(b"\xff\xda", eoi) >= 0 or data.find(b"\xff\xda", 0, eoi) < 0


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Probe:
    """Check a file's bytes from its header: format, size, mode; a skip reason for undecodable files."""
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        return Probe("empty file (0 bytes)", "empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h), mode = img.format or "", img.size, img.mode
    except UnidentifiedImageError:
        return Probe(f"not an image (unrecognised content, first bytes {data[:8]!r})", "not_image")
    except Image.DecompressionBombError as e:  # raised by Pillow for > 2x its own limit
        return Probe(f"decompression bomb: {e}", "bomb")
    except (OSError, ValueError, SyntaxError) as e:
        return Probe(f"unreadable image header: {type(e).__name__}: {e}", "unreadable")
    if w < 1 or h < 1:
        return Probe(f"empty image ({w} x {h})", "empty", fmt, w, h, mode)
    if w * h > max_pixels:
        reason = f"decompression bomb: {w} x {h} = {w * h:,} pixels > max_pixels {max_pixels:,}"
        return Probe(reason, "bomb", fmt, w, h, mode)
    if fmt == "JPEG" and _jpeg_truncated(data):
        return Probe("truncated JPEG: no end-of-image marker after the last scan", "truncated", fmt, w, h, mode)
    return Probe(None, "", fmt, w, h, mode)


@functools.cache
def dali_device() -> str:
    """'mixed' when DALI can use a CUDA GPU here, else 'cpu'."""
    try:
        import torch

        return "mixed" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class Cropper:
    """DALI pipelines: encoded bytes -> crops, and decoded HWC uint8 -> crops (the same resize and crop)."""

    def __init__(self, size: int, batch: int, device: str = "cpu", threads: int = 1):
        self.size, self.batch, self.device, self.threads = size, batch, device, threads
        self._pipes: dict[str, object] = {}

    def _pipe(self, kind: str):
        if kind not in self._pipes:
            from nvidia.dali import fn, pipeline_def, types

            gpu = self.device == "mixed"

            @pipeline_def(
                batch_size=self.batch,
                num_threads=self.threads,
                device_id=0 if gpu else None,
                exec_dynamic=True,
                prefetch_queue_depth=1,
            )
            def crops():
                if kind == "encoded":
                    data = fn.external_source(name="data", dtype=types.UINT8, ndim=1, no_copy=False)
                    img = fn.decoders.image(data, device=self.device, output_type=types.RGB)
                else:
                    img = fn.external_source(name="data", dtype=types.UINT8, ndim=3, layout="HWC", no_copy=False)
                    if gpu:
                        img = img.gpu()
                img = fn.resize(img, resize_shorter=self.size, antialias=True)
                return fn.crop(img, crop=(self.size, self.size), out_of_bounds_policy="pad")

            pipe = crops()
            pipe.build()
            self._pipes[kind] = pipe
        return self._pipes[kind]

    def _run(self, kind: str, items: list[np.ndarray]) -> list[np.ndarray]:
        pipe = self._pipe(kind)
        pipe.feed_input("data", items)
        (out,) = pipe.run()
        if self.device == "mixed":
            out = out.as_cpu()
        return [np.array(out.at(i)) for i in range(len(items))]

    def crop_decoded(self, rgb: np.ndarray) -> np.ndarray:
        """The same resize and center crop for an already decoded HWC uint8 image."""
        return self._run("raw", [np.ascontiguousarray(rgb)])[0]

    def crop_as(self, data: bytes, decoder: str = "dali") -> np.ndarray | None:
        """The crop of one file through the decoder a store record names ("pil" or "dali"); None if it fails.

        A "dali" file that no longer decodes in DALI falls back to Pillow, as when it was stored.
        """
        if decoder == "pil":
            return self.crop_decoded(pil_decode(data))
        return self.crops([data])[0][0]

    def crops(self, blobs: list[bytes]) -> list[tuple[np.ndarray | None, str, str]]:
        """(crop or None, decoder, error) per blob, in order; a failed batch is retried one by one."""
        arrays = [np.frombuffer(b, dtype=np.uint8) for b in blobs]
        results: list[tuple[np.ndarray | None, str, str]] = []
        for start in range(0, len(arrays), self.batch):
            part = arrays[start : start + self.batch]
            try:
                results += [(c, "dali", "") for c in self._run("encoded", part)]
            except Exception:  # noqa: BLE001 - one bad image fails the batch: isolate it below
                self._pipes.pop("encoded", None)  # a pipeline that raised is not reused
                results += [self._one(a) for a in part]
        return results

    def _one(self, data: np.ndarray) -> tuple[np.ndarray | None, str, str]:
        try:
            return self._run("encoded", [data])[0], "dali", ""
        except Exception as e:  # noqa: BLE001 - recorded, then Pillow gets its turn
            self._pipes.pop("encoded", None)
            dali_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        try:
            rgb = pil_decode(data.tobytes())
        except Exception as e:  # noqa: BLE001 - both decoders failed: the caller records a skip
            return None, "", f"DALI: {dali_error}; Pillow: {type(e).__name__}: {e}"
        return self.crop_decoded(rgb), "pil", f"DALI: {dali_error}"


def pil_decode(data: bytes) -> np.ndarray:
    """Full decode with Pillow: EXIF orientation applied, any mode converted to 8-bit RGB (HWC uint8)."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: keep the top 8 bits, not a clip
            arr = np.asarray(img, dtype=np.uint32) >> 8
            img = Image.fromarray(arr.astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


_local = threading.local()


def cropper(size: int, batch: int, device: str, threads: int = 1) -> Cropper:
    """A per-thread cached Cropper (building DALI pipelines costs time; Dask workers reuse them)."""
    key = (size, batch, device, threads)
    cache = getattr(_local, "croppers", None)
    if cache is None:
        cache = _local.croppers = {}
    if key not in cache:
        cache[key] = Cropper(size, batch, device, threads)
    return cache[key]
