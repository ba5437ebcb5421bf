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

from training.loss import upsample_ab


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
    from pipeline.discover import read_path

    cfg = group.attrs["config"]
    root = Path(cfg["source"])
    crop = cropper(int(cfg["size"]), 1, "cpu")
    out = []
    for i in idx:
        try:
            data = read_path(root, str(group["path"][int(i)]))
        except OSError:
            out.append(None)
            continue
        rgb = crop.crop_as(data, "dali")
        out.append(rgb if rgb is not None else crop.crop_as(data, "pil"))
    return out


@torch.no_grad()
def predict_ab(model, L8: np.ndarray, device, size: int, head: str, mode: str = "argmax", refs=None,
               strength: float = 1.0) -> np.ndarray:  # fmt: skip
    """(a, b) (B, S, S, 2) predicted for stored L uint8 (B, S, S), the network run at `size`; with `refs`
    (`training.guidance.Reference`, one per image), guided by each one's colours."""
    import torch.nn.functional as F

    from training.guidance import guided_ab

    L = torch.from_numpy(L8).unsqueeze(1).float().div(255.0).to(device)  # (B, 1, S, S)
    x = F.interpolate(L, size=(size, size), mode="area") if size != L.shape[-1] else L
    out, _ = model(x)
    ab = upsample_ab(guided_ab(out, head, mode, refs, strength), L.shape[-2:])  # (B, 2, S, S)
    return ab.permute(0, 2, 3, 1).float().cpu().numpy()


AUC_MAX = 150  # Zhang et al.'s raw accuracy: thresholds 0..150 on the (a, b) error


def auc(ab: np.ndarray, ab_true: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the curve of the share of pixels whose (a, b) error is within t, for t = 0 .. 150, normalised
    to [0, 1] (Zhang et al. 2016, Sec. 3.1; the review of papers/004); `weights` per pixel for the
    class-rebalanced version."""
    err = np.sqrt(((ab.astype(np.float64) - ab_true) ** 2).sum(-1)).ravel()
    w = np.ones_like(err) if weights is None else weights.ravel().astype(np.float64)
    order = np.argsort(err)
    cum = np.cumsum(w[order]) / w.sum()
    within = np.searchsorted(err[order], np.arange(AUC_MAX + 1), side="right")  # pixels with err <= t
    return float(np.mean(np.where(within > 0, cum[np.maximum(within - 1, 0)], 0.0)))


def _scores(gt: np.ndarray, L: np.ndarray, ab: np.ndarray, ab_true: np.ndarray, w: np.ndarray) -> tuple:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rgb = lab_to_rgb8(L, ab)
    psnr = peak_signal_noise_ratio(gt, rgb, data_range=255)
    ssim = structural_similarity(gt, rgb, channel_axis=-1, data_range=255)
    return rgb, (psnr, ssim, colourfulness(rgb), auc(ab, ab_true), auc(ab, ab_true, w))


def evaluate(model, store: str, idx: np.ndarray, device, size: int, head: str, mode: str = "argmax",
             guided: float = 0.0) -> dict:  # fmt: skip
    """Metrics of the model and of the gray baseline on the stored images `idx`, and a sample grid; with
    `guided` > 0 also of the model guided by each image's own ground-truth histogram at that strength
    (seed 001's "+Global histogram")."""
    import kernels
    from pipeline.store import open_store
    from training.guidance import Reference

    group = open_store(store)
    truth = ground_truth(group, idx)
    keep = [k for k, t in enumerate(truth) if t is not None]
    if not keep:
        raise FileNotFoundError(f"none of the {len(idx)} source files of {store} can be read: no ground truth")
    idx, truth = idx[keep], [truth[k] for k in keep]
    prior = np.asarray(group["prior"][:], dtype=np.float64)
    inverse = 1.0 / (0.99 * prior / prior.sum() + 0.01 / len(prior))  # the rebalanced AuC's pixel weights
    model.eval()
    rows, scores = [], {"model": [], "gray": []} | ({"guided": []} if guided else {})
    for s in range(0, len(idx), 16):
        part = idx[s : s + 16]
        L8 = np.asarray(group["L"].oindex[np.sort(part)])[np.argsort(np.argsort(part))]
        preds = {
            "model": predict_ab(model, L8, device, size, head, mode),
            "gray": np.zeros((len(part), *L8.shape[1:], 2)),
        }
        if guided:
            refs = [Reference.of_rgb(truth[s + k]) for k in range(len(part))]
            preds["guided"] = predict_ab(model, L8, device, size, head, mode, refs, guided)
        for k in range(len(part)):
            L, gt = L8[k].astype(np.float64) * 100.0 / 255.0, truth[s + k]
            ab_true, w = kernels.rgb_to_lab(gt)[..., 1:], inverse[kernels.encode_bins(gt)]
            outs = {}
            for name, ab in preds.items():
                outs[name], values = _scores(gt, L, ab[k], ab_true, w)
                scores[name].append(values)
            if len(rows) < 8:
                rows.append([outs["gray"], outs["model"], gt])
    model.train()
    keys = ("psnr", "ssim", "colourfulness", "auc", "auc_rebalanced")
    metrics = {name: {key: float(np.mean([v[i] for v in vals])) for i, key in enumerate(keys)}
               for name, vals in scores.items()}  # fmt: skip
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
    labels = {"model": "model", "guided": "model, guided by its ground truth's histogram", "gray": "gray baseline"}
    md = [
        f"# Evaluation: {meta.get('checkpoint', '')}",
        "",
        f"{metrics['images']} images of {meta.get('store')} ({meta.get('split')}); variant {meta.get('variant')}, "
        f"head {meta.get('head')}, recovery {meta.get('recovery')}, step {meta.get('step')}.",
        "",
        "| | PSNR (dB) | SSIM | colourfulness | AuC | AuC, rebalanced |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['colourfulness']:.2f} | {m['auc']:.4f} "
            f"| {m['auc_rebalanced']:.4f} |"
            for key, label in labels.items()
            if (m := metrics.get(key))
        ),
        f"| ground truth | | | {metrics['ground_truth_colourfulness']:.2f} | | |",
        "",
        "AuC: share of pixels with an (a, b) error within t, over t = 0..150 (Zhang et al.); rebalanced: each pixel "
        "weighted by the inverse prior of its true category.",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(md))
    return out / f"{name}.md"


def main(argv=None) -> int:
    from training.checkpoint import add_model_arguments, load_model, recovery_of

    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--store", required=True)
    p.add_argument("--split", choices=("holdout", "all"), default="holdout", help="the training run's held-out images")
    p.add_argument("--max-images", type=int, default=0, help="0 = all")
    p.add_argument("--out", default=None, help="default: beside the checkpoint")
    guided = "also guide each image by its ground truth's histogram at this strength (seed 001)"
    p.add_argument("--guided", type=float, default=0.0, help=guided)
    args = p.parse_args(argv)
    try:
        model, cfg, step = load_model(args.checkpoint, args.device)
        device = next(model.parameters()).device
        recovery = recovery_of(cfg, args.recovery)
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
    metrics = evaluate(model, args.store, idx, device, size, cfg["head"], recovery, args.guided)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    meta = {"checkpoint": args.checkpoint, "store": args.store, "split": args.split, "step": step}
    meta |= {"variant": cfg["variant"], "head": cfg["head"], "recovery": recovery}
    print(write_report(out, "evaluation", metrics, meta).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
