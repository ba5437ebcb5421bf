"""`colorize` against hostile input: the pixel budget (refused from the header, undecoded), memory that grows with
the budget rather than the photo (the full-resolution join in tiles, equal to the whole-image computation), and
bad arguments refused in one line, exit 2, with nothing written."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import training.colorize as colorize
from kernels.lab import lightness
from pipeline.decode import DEFAULT_MAX_PIXELS, pil_decode
from tests.conftest import real_photos
from training.loss import recover_ab, upsample_ab
from training.metrics import gray_rgb8, lab_to_rgb8
from training.run import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def whole_image(L: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """The join as computed before tiling: (a, b) upsampled to the whole image in float64, then converted."""
    full = upsample_ab(ab[None].double(), L.shape).permute(0, 2, 3, 1)
    return lab_to_rgb8(L[None].double(), full)[0].numpy()


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return real_photos(1)[0][1]


@pytest.mark.parametrize("tile", [1000, colorize.TILE])
@pytest.mark.parametrize("height, width", [(389, 517), (1, 700), (700, 1), (7, 5), (1001, 1499)])
def test_the_tiled_join_equals_the_whole_image_computation(height, width, tile, photo_bytes, monkeypatch):
    monkeypatch.setattr(colorize, "TILE", tile)
    data = png(Image.open(io.BytesIO(photo_bytes)).convert("RGB").resize((width, height)))
    L_np = colorize.L_of_bytes(data)
    assert np.array_equal(L_np, lightness(pil_decode(data)))  # L in row tiles: the same float64 values
    L = torch.from_numpy(L_np)
    assert np.array_equal(colorize.join(L, None), gray_rgb8(L[None])[0].numpy())
    rng = torch.Generator().manual_seed(height * width)
    for side in (16, 56):  # the map of a model trained at 64 and at 224
        logits = torch.randn(1, 313, side, side, generator=rng) * 3
        maps = [recover_ab(logits, "classify", "argmax"), recover_ab(logits, "classify", "annealed"),
                torch.rand(1, 2, side, side, generator=rng) * 220 - 110]  # fmt: skip
        for ab in maps:  # argmax's map is channels-last, the others contiguous: both of torch's layouts
            # torch fuses the bilinear sum with FMA, so a few float64 (a, b) differ in the last bit; none of the
            # 8-bit colours may.
            assert np.array_equal(colorize.join(L, ab[0]), whole_image(L, ab[0])), (side, ab.is_contiguous())


def test_the_default_budget_refuses_36_megapixels_and_takes_a_24_megapixel_camera():
    assert 6000 * 4000 <= DEFAULT_MAX_PIXELS < 6000 * 6000
    with pytest.raises(colorize.TooLarge, match=r"6000 x 6000 = 36,000,000 pixels, more than the budget of 25,0"):
        colorize.check_image(png(Image.new("L", (6000, 6000), 128)))
    assert colorize.check_image(png(Image.new("L", (6000, 4000), 128))) == (6000, 4000)


def test_batches_hold_at_most_the_budget(tmp_path):
    for k in range(5):
        Image.new("RGB", (100, 100), (k * 40, 90, 200)).save(tmp_path / f"{k}.png")
    sizes = [len(b) for b in colorize.batches(colorize.inputs([str(tmp_path)]), max_pixels=25_000)]
    assert sizes == [2, 2, 1]


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("limits")
    train(TrainConfig(store=str(tiny_store[0]), out=str(tmp / "run"), width=1 / 8, size=64, batch_size=4, steps=1,
                      holdout=0.25, eval_images=2, tensorboard=False))  # fmt: skip
    return tmp / "run" / "checkpoint-last.pt"


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo_bytes) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("files")
    paths = {"photo": tmp / "photo.jpg", "huge": tmp / "huge.png", "text": tmp / "notes.txt"}
    paths["photo"].write_bytes(photo_bytes)
    Image.new("L", (6000, 6000), 128).save(paths["huge"])  # 36 M pixels in a few kB
    paths["text"].write_text("not an image\n")
    return paths


def tree(root: Path) -> dict[str, int]:
    return {str(p): p.is_file() and p.stat().st_mtime_ns for p in [root, *root.rglob("*")]}


BAD = {
    "photo above the budget": ("huge", [], "6000 x 6000 = 36,000,000 pixels, more than the budget of 25,000,000"),
    "budget below the photo": ("photo", ["--max-pixels", "1000"], "more than the budget of 1,000"),
    "out below a regular file": ("photo", ["--out", "{text}/out"], "is a file, not a folder"),
    "out is a regular file": ("photo", ["--out", "{text}"], "is a file, not a folder"),
    "out in /proc": ("photo", ["--out", "/proc/colorize-out"], "--out /proc/colorize-out"),
    "reference missing": ("photo", ["--reference", "{tmp}/none.jpg"], "No such file"),
    "reference not an image": ("photo", ["--reference", "{text}"], "not an image Pillow can read"),
    "reference above the budget": ("photo", ["--reference", "{huge}"], "6000 x 6000"),
    "reference strength nan": ("photo", ["--reference", "{photo}", "--reference-strength", "nan"], "finite"),
    "reference strength negative": ("photo", ["--reference", "{photo}", "--reference-strength", "-1"], ">= 0"),
    "budget not a number": ("photo", ["--max-pixels", "many"], "--max-pixels"),
    "missing input": ("{tmp}/none.jpg", [], "no such file or folder"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, checkpoint, files, tmp_path, monkeypatch, capsys):
    given, extra, expected = BAD[case]
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    argv = ["--checkpoint", str(checkpoint), names.get(given, given.format(**names)), "--out", str(tmp_path / "out")]
    argv += [a.format(**names) for a in extra]

    def no_decoding(data):
        raise AssertionError("decoded an image the header had refused")

    if "budget" in case and "reference" not in case:
        monkeypatch.setattr("pipeline.decode.pil_decode", no_decoding)
    before = tree(tmp_path), tree(files["text"].parent)
    try:
        rc = colorize.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and expected in lines[0], (argv, err)
    assert "Traceback" not in err and " at 0x" not in err and not out
    assert (tree(tmp_path), tree(files["text"].parent)) == before
    assert not Path("/proc/colorize-out").exists()


CHILD = """import resource, sys
from training.colorize import main
assert main(sys.argv[1:]) == 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux")
def test_memory_grows_by_a_few_bytes_per_pixel(checkpoint, tmp_path):
    """Peak RSS of `colorize` on a big gray photo against a tiny one: the full-resolution join once took about
    170 bytes per pixel (whole-image float64 temporaries); in tiles it is L, the output and Pillow's copy."""
    peaks = {}
    for side in (64, 3000):
        Image.new("L", (side, side * 2 // 3), 128).save(tmp_path / f"{side}.png")
        argv = ["--checkpoint", str(checkpoint), str(tmp_path / f"{side}.png"), "--out", str(tmp_path / "out"),
                "--device", "cpu"]  # fmt: skip
        done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        peaks[side] = int(done.stdout.split()[-1]) * 1024
    per_pixel = (peaks[3000] - peaks[64]) / (3000 * 2000)
    assert per_pixel < 40, f"{per_pixel:.0f} bytes per pixel"
