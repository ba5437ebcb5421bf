"""A model on one of the literature's ImageNet protocols (`training.protocols`): FID, CF, both ΔCFs, PSNR, SSIM
and MAE of the model and of the gray input, beside the published figures (`training.published`).

The network sees the 256 x 256 image's L (rounded to 8 bits as a store keeps it, at the model's own size); its
(a, b), upsampled to 256, joins the image's exact L. The ground truth's Inception statistics are cached per
protocol, source listing, FID mode and weights, and checked against the pixels' digest before they are reused.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from training import fid as fidlib
from training.metrics import cf, lab_to_rgb8, mae, psnr, ssim
from training.protocols import batches, select, shortfall

BATCH = 16


def listing_key(protocol, sources, mode: str, weights) -> str:
    """What the reference statistics answer: the protocol, the images (path, size), the FID mode and weights."""
    parts = [protocol.name, mode, weights.sha256, *(f"{s.path}\0{s.size}" for s in sources)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _scores(gt: torch.Tensor, rgb: torch.Tensor) -> np.ndarray:
    """(B, 4): PSNR, SSIM, MAE and CF of each image."""
    return torch.stack([psnr(gt, rgb), ssim(gt, rgb), mae(gt, rgb), cf(rgb)], 1).cpu().numpy()


def _summary(scores: np.ndarray, cf_truth: np.ndarray) -> dict:
    return {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean()), "mae": float(scores[:, 2].mean()),
            "cf": float(scores[:, 3].mean()),
            "delta_cf": float(abs(scores[:, 3].mean() - cf_truth.mean())),  # of the means (DDColor's Table 1)
            "delta_cf_images": float(np.abs(scores[:, 3] - cf_truth).mean())}  # fmt: skip


def evaluate_protocol(model, model_cfg: dict, device, recovery: str, protocol, source: str, split: str = "val",
                      limit: int = 0, extractor=None, stats_dir: Path | None = None,
                      images: Path | None = None, selected=None) -> dict:  # fmt: skip
    """Figures of the model on `protocol`, and each image's; with `extractor` (`training.fid.Extractor`) also its
    FID against the ground truth's statistics, cached under `stats_dir`; with `images`, the colorized and true
    256 x 256 images as PNGs in its pred/ and truth/ (for any other tool to measure). `selected`: what
    `training.protocols.select` found, when it was called before."""
    import kernels
    from training.evaluate import predict_ab

    root, sources, copies = selected or select(source, split, protocol, limit)
    size, head = model_cfg["size"] or 224, model_cfg["head"]
    key = listing_key(protocol, sources, extractor.mode, extractor.weights) if extractor else ""
    cache = (stats_dir or fidlib.cache_dir() / "fid-stats") / f"{protocol.name}-{key[:24]}.npz"
    cached = fidlib.load_stats(cache, key) if extractor else None
    digest, skipped, names, rows = hashlib.sha256(), list(copies), [], {"model": [], "gray": []}
    cf_truth, pred_moments, truth_moments = [], fidlib.Moments(), fidlib.Moments()
    model.eval()
    for part, gt in batches(root, sources, protocol, BATCH, skipped):
        digest.update(gt.tobytes())
        L8 = torch.from_numpy(kernels.image_targets(gt)[0])
        ab = predict_ab(model, L8, size, head, recovery)
        L = torch.from_numpy(kernels.rgb_to_lab(gt)[..., 0]).to(ab.device).double()
        gt_t = torch.from_numpy(gt).to(ab.device)
        pred = lab_to_rgb8(L, ab)
        gray = lab_to_rgb8(L, torch.zeros_like(ab))
        rows["model"].append(_scores(gt_t, pred))
        rows["gray"].append(_scores(gt_t, gray))
        cf_truth.append(cf(gt_t).cpu().numpy())
        names += part
        if images is not None:
            _save(images, part, pred.cpu().numpy(), gt)
        if extractor:
            pred_moments.add(extractor(pred.cpu().numpy()))
            if cached is None:
                truth_moments.add(extractor(gt))
    model.train()
    if not names:
        raise FileNotFoundError(f"none of the {len(sources)} images of {protocol.name} under {source} decodes")
    truth_cf = np.concatenate(cf_truth)
    out = {name: _summary(np.concatenate(r), truth_cf) for name, r in rows.items()}
    out |= {"ground_truth": {"cf": float(truth_cf.mean())}, "images": len(names), "skipped": skipped}
    scores = np.concatenate(rows["model"])
    out["per_image"] = [{"path": n, "cf": float(c), "cf_truth": float(t), "psnr": float(p)}
                        for n, c, t, p in zip(names, scores[:, 3], truth_cf, scores[:, 0], strict=True)]  # fmt: skip
    out |= {"protocol": protocol.name, "about": protocol.about, "source": str(source),
            "note": shortfall(protocol, len(names))}  # fmt: skip
    if extractor:
        out["fid"], pred_stats = _fid(extractor, key, digest.hexdigest(), cache, cached, truth_moments,
                                      pred_moments, root, sources, protocol)  # fmt: skip
        out["model"]["fid" if extractor.weights.reference else "fid_unverified"] = out["fid"].pop("value")
        out["_pred_stats"] = pred_stats
    return out


def _save(folder: Path, names: list[str], pred: np.ndarray, truth: np.ndarray) -> None:
    from PIL import Image

    for sub, batch in (("pred", pred), ("truth", truth)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name, rgb in zip(names, batch, strict=True):
            Image.fromarray(rgb).save(folder / sub / f"{Path(name).stem}.png")


def _fid(extractor, key, digest, cache, cached, truth_moments, pred_moments, root, sources, protocol):
    """The FID record and the prediction's statistics; the ground truth's from the cache when its pixels' digest
    matches, else computed (again, when the cache was stale) and cached."""
    if cached is not None and cached[3] != digest:  # same listing, other pixels: recompute
        cached, truth_moments = None, fidlib.Moments()
        for _, gt in batches(root, sources, protocol, BATCH, []):
            truth_moments.add(extractor(gt))
    reused = cached is not None
    if cached is None:
        mu, sigma = truth_moments.stats()
        fidlib.save_stats(cache, mu, sigma, truth_moments.n, key, digest)
        cached = (mu, sigma, truth_moments.n, digest)
    mu, sigma = pred_moments.stats()
    w = extractor.weights
    record = {"value": fidlib.frechet_distance(mu, sigma, cached[0], cached[1]), "mode": extractor.mode,
              "weights_sha256": w.sha256, "weights": w.origin, "reference_weights": w.reference,
              "reference_stats": str(cache), "reference_stats_reused": reused}  # fmt: skip
    return record, (mu, sigma, pred_moments.n, key)


def write_protocol_report(out: Path, metrics: dict, meta: dict) -> Path:
    """evaluation-<protocol>.json and .md (and the prediction's FID statistics, .fid.npz) in `out`."""
    from training.published import CAVEAT, table

    name = f"evaluation-{metrics['protocol']}"
    out.mkdir(parents=True, exist_ok=True)
    if stats := metrics.pop("_pred_stats", None):
        fidlib.save_stats(out / f"{name}.fid.npz", *stats)
        metrics["fid"]["stats"] = f"{name}.fid.npz"
    (out / f"{name}.json").write_text(json.dumps(metrics | meta, indent=1))
    m, fid = metrics["model"], metrics.get("fid")
    lines = [f"# Evaluation on {metrics['protocol']}: {meta.get('checkpoint', '')}", "",
             f"{metrics['images']} images: {metrics['about']}. Variant {meta.get('variant')}, recovery "
             f"{meta.get('recovery')}, step {meta.get('step')}.", ""]  # fmt: skip
    if metrics["note"]:
        lines += [f"**{metrics['note']}.**", ""]
    lines += table(metrics["protocol"], [("this model", m), ("gray input", metrics["gray"])])
    g = metrics["gray"]
    lines += ["", f"Ground truth CF {metrics['ground_truth']['cf']:.2f}. SSIM {m['ssim']:.4f}, MAE {m['mae']:.2f} "
              f"(gray input: {g['ssim']:.4f}, {g['mae']:.2f}).", "",
              "ΔCF (means): |mean CF - the ground truth's mean CF|, as DDColor's Table 1; ΔCF (per image): the mean "
              "of |CF - its ground truth's CF|.", "", CAVEAT, ""]  # fmt: skip
    if fid:
        kind = "clean-fid's download" if fid["reference_weights"] else "a file no download here recorded"
        lines += [
            f"FID: clean-fid's Inception, mode {fid['mode']}, weights sha256 {fid['weights_sha256'][:16]} "
            f"({kind}); reference statistics {'reused' if fid['reference_stats_reused'] else 'computed'}."
        ]
        if not fid["reference_weights"]:
            lines += ["", "**The weights are not verified as the reference Inception: the distance above is not "
                      "an FID and is not carried into a model card.**"]  # fmt: skip
    if metrics["skipped"]:
        lines += ["", f"{len(metrics['skipped'])} images skipped:",
                  *(f"- {s['path']}: {s['reason']}" for s in metrics["skipped"][:20])]  # fmt: skip
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out / f"{name}.md"
