"""Colorize photos: `colorize --checkpoint C INPUT... --out DIR [--reference PHOTO] [--max-pixels N]`.

INPUTs are files or folders (searched recursively), any mode or format Pillow reads. Each image is
converted to L (colour inputs too), the network runs on L resized to its training size, in batches on the
device, and the predicted (a, b) (Eq. 15-16) is upsampled to the input's full resolution (Eq. 17) and joined
with the original full-resolution L there. Outputs keep each photo's path below the folder given
(DIR/<folder>/<path>.png; a file given alone: DIR/<name>.png), so none overwrites another. With `--reference
PHOTO` the colours are steered towards the reference's (`training.guidance`, after CU-net's global histogram;
`--reference-strength`, default 1). An image with more than `--max-pixels` pixels is refused from its header,
undecoded; the full-resolution work runs in tiles and batches hold at most that many pixels, so memory follows
the budget, not the photos. An unreadable or refused file is reported and skipped; the others are still
colorized. Exit code 0 if all succeeded, 1 if some failed, 2 on bad arguments or when nothing was readable.
"""

from collections.abc import Iterator

import numpy as np
import torch

from pipeline.common.cli import ArgumentParser, Refused, command, finite_float, one_line, positive_int
from pipeline.decode import DEFAULT_MAX_PIXELS
from pipeline.storage import first_contact, location, reachable
from pipeline.storage.files import read_file
from training.loss import upsample_ab
from training.photos import (  # noqa: F401 - the photo handling, re-exported for the demo and the tests
    BATCH,
    IMAGE_SUFFIXES,
    TILE,
    L_of_bytes,
    NotAnImage,
    TooLarge,
    batches,
    check_image,
    decode,
    inputs,
    not_an_image,
    quiet_pillow,
    read_L,
    write_outputs,
)


def reference_of(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The `training.guidance.Reference` of a photo's bytes, checked as every input is."""
    from training.guidance import Reference

    check_image(data, max_pixels)
    try:
        return Reference.of_bytes(data)
    except Exception as e:  # noqa: BLE001 - as in decode
        raise not_an_image(e) from None


def colorize_batch(model, Ls: list[np.ndarray], size: int, head: str, recovery: str = "argmax", reference=None,
                   strength: float = 1.0) -> list[np.ndarray]:  # fmt: skip
    """uint8 RGB (H, W, 3) for each L (H, W) in [0, 100]: the network at size x size on the model's device for
    the whole batch, each (a, b) upsampled to its own H x W and joined with its full-resolution L there; guided
    by `reference` (`training.guidance.Reference`) when given."""
    return to_rgb(*predict(model, Ls, size), head, recovery, reference, strength)


@torch.no_grad()
def predict(model, Ls: list[np.ndarray], size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the model's colour output for the batch at size x size, each L as a (1, 1, H, W) tensor on its device)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    full = [torch.from_numpy(L).to(device)[None, None] for L in Ls]

    def small(t: torch.Tensor) -> torch.Tensor:  # L / 100 divided in place: one image-sized temporary, not two
        mode = "area" if min(t.shape[-2:]) >= size else "bilinear"
        return F.interpolate(t.to(torch.float32, copy=True).div_(100.0), size=(size, size), mode=mode)

    return model(torch.cat([small(t) for t in full]))[0], full


def colors(out: torch.Tensor, full: list[torch.Tensor], head: str, recovery: str, reference=None,
           strength: float = 1.0) -> Iterator[np.ndarray]:  # fmt: skip
    """The colour recovery of `predict`'s output (guided by `reference` when given), joined with each full L,
    one image at a time."""
    from training.guidance import guided_ab

    ab = guided_ab(out, head, recovery, [reference] * len(full) if reference is not None else None, strength)
    for k, t in enumerate(full):
        yield join(t[0, 0], ab[k])


def to_rgb(out: torch.Tensor, full: list[torch.Tensor], head: str, recovery: str, reference=None,
           strength: float = 1.0) -> list[np.ndarray]:  # fmt: skip
    """`colors` as a list."""
    return list(colors(out, full, head, recovery, reference, strength))


def _rows(n_in: int, n_out: int) -> tuple[torch.Tensor, ...]:
    """(y0, y1, w0, w1): row y of torch's bilinear resize (align_corners=False) from n_in to n_out rows is
    w0[y] * in[y0[y]] + w1[y] * in[y1[y]], with the positions and weights torch computes."""
    if n_in == n_out:
        rows = torch.arange(n_out)
        return rows, rows, torch.ones(n_out, dtype=torch.float64), torch.zeros(n_out, dtype=torch.float64)
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    y0 = src.float().floor().long().clamp(max=n_in - 1)  # torch floors the position in float32
    w1 = (src - y0).clamp(0.0, 1.0)
    return y0, torch.where(y0 < n_in - 1, y0 + 1, y0), 1.0 - w1, w1


def join(L: torch.Tensor, ab: torch.Tensor | None) -> np.ndarray:
    """uint8 RGB (H, W, 3) of the full-resolution L (H, W) and the (a, b) map (2, h, w) upsampled to it (Eq. 17):
    `lab_to_rgb8(L, upsample_ab(ab, (H, W)))` computed in row tiles, so that no float64 temporary has the
    image's size. Bilinear resizing is separable: the width pass runs at the map's own height (small), the
    height pass per tile. ab None: the gray image (a = b = 0)."""
    from training.metrics import lab_to_rgb8

    H, W = L.shape
    out = np.empty((H, W, 3), dtype=np.uint8)
    if ab is not None:
        wide = upsample_ab(ab[None].double(), (ab.shape[-2], W))[0]  # (2, h, W)
        y0, y1, w0, w1 = (t.to(L.device) for t in _rows(ab.shape[-2], H))
    rows = max(1, TILE // W)
    for r in range(0, H, rows):
        s = slice(r, min(H, r + rows))
        if ab is None:
            ab_s = torch.zeros((s.stop - r, W, 2), dtype=torch.float64, device=L.device)
        else:
            ab_s = (wide[:, y0[s]] * w0[s, None] + wide[:, y1[s]] * w1[s, None]).permute(1, 2, 0)
        out[s] = lab_to_rgb8(L[s][None], ab_s[None])[0].cpu().numpy()
    return out


@command
def main(argv=None) -> int:

    from training.checkpoint import add_model_arguments, load_model, recovery_of

    p = ArgumentParser(prog="colorize", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="the folder for the results (created)")
    p.add_argument("--reference", help="a colour photo whose colours the results are steered towards")
    p.add_argument("--reference-strength", type=finite_float, default=1.0, help="how strongly (0 = not at all)")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"larger images are refused from their header (default {DEFAULT_MAX_PIXELS:,})")  # fmt: skip
    args = p.parse_args(argv)
    quiet_pillow()
    if args.reference_strength < 0:
        p.error(f"argument --reference-strength: must be >= 0, got {args.reference_strength}")
    with first_contact():  # an endpoint that does not answer is reported within seconds
        reachable(args.checkpoint, args.reference or "")
    model, cfg, _ = load_model(args.checkpoint, args.device)
    recovery, size = recovery_of(cfg, args.recovery), cfg.get("size") or 224
    reference = None
    if args.reference:
        try:
            reference = reference_of(read_file(location(args.reference)), args.max_pixels)
        except (OSError, Refused) as e:
            why = (e.strerror or one_line(e)) if isinstance(e, OSError) else str(e)
            raise Refused(f"--reference {args.reference}: {why}") from None
    files = inputs(args.inputs)
    if not files:
        raise Refused("no input images found")

    def results():
        for batch in batches(files, args.max_pixels):
            outs, full = predict(model, [L for _, _, L in batch], size)
            rgbs = colors(outs, full, cfg["head"], recovery, reference, args.reference_strength)
            for (f, rel, _), rgb in zip(batch, rgbs, strict=True):
                yield f, rel, rgb

    return write_outputs(args.out, len(files), results())


if __name__ == "__main__":
    raise SystemExit(main())
