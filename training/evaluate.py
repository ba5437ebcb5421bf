"""Evaluation (Sec. 4.3): PSNR and SSIM on RGB, and colourfulness, for a checkpoint and the gray baseline.

    python -m training.evaluate --checkpoint C --store S [--split holdout|all] [--max-images 64] [--out DIR]

The ground truth of an image is its S x S crop, re-decoded from the source file named in the store (the
store keeps L and categories, not the colours). The prediction is the stored L with the network's (a, b)
(recovered by Eq. 15-16, upsampled x4 by Eq. 17); the gray baseline is the same L with a = b = 0. PSNR and
SSIM come from scikit-image (`peak_signal_noise_ratio`, `structural_similarity` on 8-bit RGB, data range
255); colourfulness is Hasler and Suesstrunk's M = sigma_rgyb + 0.3 mu_rgyb. Writes json, md and a grid.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from training.loss import recover_ab, upsample_ab


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def lab_to_rgb8(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """L (H, W) in [0, 100] and ab (H, W, 2) -> uint8 RGB (H, W, 3) (scikit-image, clipped to the gamut)."""
    import warnings

    from skimage.color import lab2rgb

    lab = np.concatenate([L[..., None], ab], axis=-1).astype(np.float64)
    with warnings.catch_warnings():  # out-of-gamut Lab is clipped, as intended
        warnings.simplefilter("ignore", UserWarning)
        rgb = lab2rgb(lab)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def ground_truth(group, idx: np.ndarray) -> list[np.ndarray | None]:
    """The S x S RGB crops of the stored images, re-decoded from their source files (None if gone)."""
    from pipeline.decode import cropper

    cfg = group.attrs["config"]
    root = Path(cfg["source"])
    crop = cropper(int(cfg["size"]), 1, "cpu")
    out = []
    for i in idx:
        path = root / str(group["path"][int(i)])
        try:
            data = path.read_bytes()
        except OSError:
            out.append(None)
            continue
        rgb = crop.crop_as(data, "dali")
        out.append(rgb if rgb is not None else crop.crop_as(data, "pil"))
    return out


@torch.no_grad()
def predict_ab(model, L8: np.ndarray, device, size: int, head: str, mode: str = "argmax") -> np.ndarray:
    """(a, b) (B, S, S, 2) predicted for stored L uint8 (B, S, S), the network run at `size`."""
    import torch.nn.functional as F

    L = torch.from_numpy(L8).unsqueeze(1).float().div(255.0).to(device)  # (B, 1, S, S)
    x = F.interpolate(L, size=(size, size), mode="area") if size != L.shape[-1] else L
    logits, _ = model(x)
    ab = upsample_ab(recover_ab(logits, head, mode), L.shape[-2:])  # (B, 2, S, S)
    return ab.permute(0, 2, 3, 1).float().cpu().numpy()


def evaluate(model, store: str, idx: np.ndarray, device, size: int, head: str, mode: str = "argmax") -> dict:
    """Metrics of the model and of the gray baseline on the stored images `idx`, and a sample grid."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from pipeline.store import open_store

    group = open_store(store)
    truth = ground_truth(group, idx)
    keep = [k for k, t in enumerate(truth) if t is not None]
    if not keep:
        raise FileNotFoundError(f"none of the {len(idx)} source files of {store} can be read: no ground truth")
    idx = idx[keep]
    truth = [truth[k] for k in keep]
    model.eval()
    rows, scores = [], {"model": [], "gray": []}
    for s in range(0, len(idx), 16):
        part = idx[s : s + 16]
        L8 = np.asarray(group["L"].oindex[np.sort(part)])[np.argsort(np.argsort(part))]
        ab = predict_ab(model, L8, device, size, head, mode)
        for k in range(len(part)):
            L = L8[k].astype(np.float64) * 100.0 / 255.0
            gt = truth[s + k]
            outs = {"model": lab_to_rgb8(L, ab[k]), "gray": lab_to_rgb8(L, np.zeros_like(ab[k]))}
            for name, rgb in outs.items():
                scores[name].append(
                    (
                        peak_signal_noise_ratio(gt, rgb, data_range=255),
                        structural_similarity(gt, rgb, channel_axis=-1, data_range=255),
                        colourfulness(rgb),
                    )
                )
            if len(rows) < 8:
                rows.append([outs["gray"], outs["model"], gt])
    model.train()
    metrics = {
        name: {
            "psnr": float(np.mean([v[0] for v in vals])),
            "ssim": float(np.mean([v[1] for v in vals])),
            "colourfulness": float(np.mean([v[2] for v in vals])),
        }
        for name, vals in scores.items()
    }
    metrics["ground_truth_colourfulness"] = float(np.mean([colourfulness(t) for t in truth]))
    metrics["images"] = len(idx)
    return metrics | {"_grid": rows}


def write_report(out: Path, name: str, metrics: dict, meta: dict) -> Path:
    from training.plots import grid

    out.mkdir(parents=True, exist_ok=True)
    rows = metrics.pop("_grid")
    if rows:
        grid(out / f"{name}.grid.png", rows, ["input (gray)", "ours", "ground truth"])
    (out / f"{name}.json").write_text(json.dumps(metrics | meta, indent=1))
    m, g = metrics["model"], metrics["gray"]
    md = [
        f"# Evaluation: {meta.get('checkpoint', '')}",
        "",
        f"{metrics['images']} images of {meta.get('store')} ({meta.get('split')}); variant {meta.get('variant')}, "
        f"head {meta.get('head')}, recovery {meta.get('recovery')}, step {meta.get('step')}.",
        "",
        "| | PSNR (dB) | SSIM | colourfulness |",
        "|---|---|---|---|",
        f"| model | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['colourfulness']:.2f} |",
        f"| gray baseline (a = b = 0) | {g['psnr']:.3f} | {g['ssim']:.4f} | {g['colourfulness']:.2f} |",
        f"| ground truth | | | {metrics['ground_truth_colourfulness']:.2f} |",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(md))
    return out / f"{name}.md"


def main(argv=None) -> int:
    from training.checkpoint import add_model_arguments, load_model

    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--store", required=True)
    p.add_argument("--split", choices=("holdout", "all"), default="holdout", help="the training run's held-out images")
    p.add_argument("--max-images", type=int, default=0, help="0 = all")
    p.add_argument("--out", default=None, help="default: beside the checkpoint")
    args = p.parse_args(argv)
    try:
        model, cfg, step = load_model(args.checkpoint, args.device)
        device = next(model.parameters()).device
        from pipeline.store import open_store
        from training.data import holdout_mask

        n = int(open_store(args.store).attrs["n_images"])
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    idx = np.arange(n) if args.split == "all" else np.flatnonzero(holdout_mask(n, cfg["holdout"]))
    if len(idx) == 0:
        idx = np.arange(n)
    if args.max_images:
        idx = idx[: args.max_images]
    size = cfg["size"] or 224
    metrics = evaluate(model, args.store, idx, device, size, cfg["head"], args.recovery)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    meta = {"checkpoint": args.checkpoint, "store": args.store, "split": args.split, "step": step}
    meta |= {"variant": cfg["variant"], "head": cfg["head"], "recovery": args.recovery}
    print(write_report(out, "evaluation", metrics, meta).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
