"""Evaluation (Sec. 4.3): PSNR, SSIM, colourfulness and Zhang's raw accuracy of a checkpoint and the gray baseline.

    python -m training.evaluate --checkpoint C --store S [--split holdout|all] [--max-images 64] [--guided 1]
    python -m training.evaluate --checkpoint C --protocol val5k --source IMAGENET_VAL [--fid-weights FILE]

With --protocol val5k or val50k the images are ImageNet's validation photos as the literature crops them, and the
figures are the literature's: FID, CF and both ΔCFs beside published ones (`training.field_eval`,
docs/evaluation.md). Otherwise (the store protocol):

The ground truth of an image is its S x S crop, re-decoded from the source named in the store (the store keeps
L and categories, not the colours). The prediction is the stored L with the network's (a, b) (recovered by
Eq. 15-16, upsampled by Eq. 17); the gray baseline is the same L with a = b = 0. Batches run on the device and
the metrics are computed there (`training.metrics`: scikit-image's lab2rgb, PSNR and SSIM, to the last digit).
Writes json, md and a grid.
"""

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.common.cli import ArgumentParser, command, non_negative_float, non_negative_int
from pipeline.storage import add_storage_option, first_contact, location, parse_options, reachable
from pipeline.store.format import source_of
from training.loss import upsample_ab
from training.metrics import NEUTRAL, OVERFLOW, auc, cf, colourfulness, lab_to_rgb8, mae, overflow_counts, psnr, ssim

BATCH = 16


def ground_truth(group, idx: np.ndarray, store) -> list[np.ndarray | None]:
    """The S x S RGB crops of the images idx of `store` (its opened `group`), re-decoded from their source files
    (None if gone); a source in a bucket is read with the store's storage options."""
    from pipeline.decode import cropper
    from pipeline.discover import read_path

    root = source_of(group, store)
    crop = cropper(int(group.attrs["config"]["size"]), 1, "cpu")
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
def predict_ab(model, L8: torch.Tensor, size: int, head: str, mode: str = "argmax", refs=None,
               strength: float = 1.0) -> torch.Tensor:  # fmt: skip
    """(a, b) (B, S, S, 2) on the model's device for stored L uint8 (B, S, S), the network run at `size`; with
    `refs` (`training.guidance.Reference`, one per image), guided by each one's colours."""
    import torch.nn.functional as F

    from training.guidance import guided_ab

    L = L8.to(next(model.parameters()).device).unsqueeze(1).float().div(255.0)  # (B, 1, S, S)
    x = F.interpolate(L, size=(size, size), mode="area") if size != L.shape[-1] else L
    pad = -size % 32  # a side no network's stride divides (zhang16-liu's 150): padded, and cropped back after
    out, _ = model(F.pad(x, (0, pad, 0, pad), mode="replicate") if pad else x)
    ab = guided_ab(out, head, mode, refs, strength)
    if pad:
        ab = upsample_ab(ab, (size + pad, size + pad))[..., :size, :size]
    return upsample_ab(ab, L.shape[-2:]).permute(0, 2, 3, 1)


def _scores(truth: torch.Tensor, L: torch.Tensor, ab: torch.Tensor, ab_true, weights) -> tuple[torch.Tensor, list]:
    """The RGB of (L, ab) and, per image, (PSNR, SSIM, colourfulness, AuC, rebalanced AuC, overflowing pixels,
    near-neutral pixels, MAE, CF)."""
    rgb = lab_to_rgb8(L, ab)
    values = [psnr(truth, rgb), ssim(truth, rgb), colourfulness(rgb)]
    values += [auc(ab, ab_true), auc(ab, ab_true, weights), *overflow_counts(ab, ab_true), mae(truth, rgb), cf(rgb)]
    return rgb, torch.stack(values, 1).cpu().tolist()


def evaluate(model, store, idx: np.ndarray, device, size: int, head: str, mode: str = "argmax",
             guided: float = 0.0) -> dict:  # fmt: skip
    """Metrics of the model and of the gray baseline on the stored images `idx` of `store` (its reader, opened
    once and shared, or its path), and a sample grid; with `guided` > 0 also of the model guided by each image's
    own ground-truth histogram at that strength (CU-net's "+Global histogram", Wang, Chen and Tian 2022)."""
    import kernels
    from pipeline.store.reader import reader_of
    from training.guidance import Reference

    reader = reader_of(store)
    group = reader.group
    truth = ground_truth(group, idx, reader.path)
    keep = [k for k, t in enumerate(truth) if t is not None]
    if not keep:
        raise FileNotFoundError(f"none of the {len(idx)} source files of {store} can be read: no ground truth")
    idx, truth = idx[keep], [truth[k] for k in keep]
    prior = torch.as_tensor(np.asarray(group["prior"][:], dtype=np.float64), device=device)
    inverse = 1.0 / (0.99 * prior / prior.sum() + 0.01 / len(prior))  # the rebalanced AuC's pixel weights
    model.eval()
    rows, scores, cf_truth = [], {"model": [], "gray": []} | ({"guided": []} if guided else {}), []
    for s in range(0, len(idx), BATCH):
        part = idx[s : s + BATCH]
        gt = np.stack(truth[s : s + BATCH])  # (B, S, S, 3) uint8
        L8 = torch.from_numpy(reader.read(part, ("L",))["L"])
        preds = {"model": predict_ab(model, L8, size, head, mode)}
        preds["gray"] = torch.zeros_like(preds["model"])
        if guided:
            refs = [Reference.of_rgb(t) for t in gt]
            preds["guided"] = predict_ab(model, L8, size, head, mode, refs, guided)
        gt_t = torch.from_numpy(gt).to(device)
        cf_truth += cf(gt_t).cpu().tolist()
        ab_true = torch.from_numpy(kernels.rgb_to_lab(gt)[..., 1:]).to(device)
        weights = inverse[kernels.encode_bins(gt_t).long()]
        L = L8.to(device).double() * (100.0 / 255.0)
        outs = {}
        for name, ab in preds.items():
            outs[name], values = _scores(gt_t, L, ab, ab_true, weights)
            scores[name] += values
        for k in range(min(len(part), 8 - len(rows))):
            rows.append([outs["gray"][k].cpu().numpy(), outs["model"][k].cpu().numpy(), gt[k]])
    model.train()
    keys = ("psnr", "ssim", "colourfulness", "auc", "auc_rebalanced")
    metrics = {name: {key: float(np.mean([v[i] for v in vals])) for i, key in enumerate(keys)}
               for name, vals in scores.items()}  # fmt: skip
    for name, vals in scores.items():  # pooled over the images: the share of near-neutral pixels painted
        neutral = sum(v[6] for v in vals)
        metrics[name]["overflow"] = float(sum(v[5] for v in vals) / neutral) if neutral else 0.0
        metrics[name]["mae"] = float(np.mean([v[7] for v in vals]))
        cfs = np.array([v[8] for v in vals])
        metrics[name] |= {"cf": float(cfs.mean()), "delta_cf": float(abs(cfs.mean() - np.mean(cf_truth))),
                          "delta_cf_images": float(np.abs(cfs - np.array(cf_truth)).mean())}  # fmt: skip
    metrics["neutral_share"] = float(sum(v[6] for v in scores["gray"]) / (len(idx) * truth[0].shape[0] ** 2))
    metrics["ground_truth_colourfulness"] = float(colourfulness(torch.from_numpy(np.stack(truth))).mean())
    metrics["ground_truth_cf"] = float(np.mean(cf_truth))
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
        "| | PSNR (dB) | SSIM | MAE | colourfulness | CF | ΔCF | AuC | AuC, rebalanced | overflow |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {label} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['mae']:.2f} | {m['colourfulness']:.2f} "
            f"| {m['cf']:.2f} | {m['delta_cf']:.2f} | {m['auc']:.4f} | {m['auc_rebalanced']:.4f} "
            f"| {m['overflow']:.4f} |"
            for key, label in labels.items()
            if (m := metrics.get(key))
        ),
        f"| ground truth | | | | {metrics['ground_truth_colourfulness']:.2f} | {metrics['ground_truth_cf']:.2f} "
        "| | | | |",
        "",
        "MAE: mean absolute error of the 8-bit RGB values (Nazeri et al.). AuC: share of pixels with an (a, b) "
        "error within t, over t = 0..150 (Zhang et al.); rebalanced: each pixel "
        "weighted by the inverse prior of its true category. Overflow: the share of the truth's near-neutral "
        f"pixels (chroma below {NEUTRAL:g}; {100 * metrics['neutral_share']:.0f}% of these images) that the "
        f"prediction paints with a colour (chroma above the truth's by more than {OVERFLOW:g}).",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(md))
    return out / f"{name}.md"


@command
def main(argv=None) -> int:
    from pipeline.common.extras import require
    from training.checkpoint import add_model_arguments
    from training.fid import MODES
    from training.protocols import NAMES

    p = ArgumentParser(prog="colorize-evaluate", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--protocol", choices=NAMES, default="store",
                   help="store: a store's held-out crops; val5k, val50k: ImageNet's validation images, read from "
                   "--source (docs/evaluation.md)")  # fmt: skip
    p.add_argument("--store", help="the store (--protocol store)")
    p.add_argument("--source", help="ImageNet's root, its val folder or ILSVRC2012_img_val.tar (val5k, val50k)")
    p.add_argument("--split", choices=("holdout", "all"), default="holdout", help="the training run's held-out images")
    p.add_argument("--max-images", type=non_negative_int, default=0, help="0 = all")
    p.add_argument("--out", default=None, help="default: beside the checkpoint")
    guided = "also guide each image by its ground truth's histogram at this strength (CU-net's oracle)"
    p.add_argument("--guided", type=non_negative_float, default=0.0, help=guided)
    p.add_argument("--no-fid", action="store_true", help="val5k, val50k: leave FID out (no Inception needed)")
    p.add_argument("--fid-weights", metavar="FILE", help="clean-fid's inception-2015-12-05.pt, for a machine "
                   "without a network (default: clean-fid's download, cached)")  # fmt: skip
    p.add_argument("--fid-mode", choices=tuple(MODES), default="legacy_tensorflow", help="how images reach 299 x 299")
    p.add_argument("--save-images", action="store_true", help="val5k, val50k: also write the colorized and true "
                   "images as PNGs (evaluation-PROTOCOL/pred, /truth) for other tools")  # fmt: skip
    add_storage_option(p)
    args = p.parse_args(argv)
    args.options = parse_options(args.storage_option)  # they travel with every location made of the arguments
    require("train", "colorize-evaluate")
    if args.protocol == "store":
        if not args.store or args.source:
            p.error("--protocol store needs --store (and no --source)")
        return _store(args)
    if not args.source or args.store:
        p.error(f"--protocol {args.protocol} needs --source (ImageNet's val images) and no --store")
    return _protocol(args)


def _output(args):
    from training.modelfolder import is_model_folder
    from training.runfolder import RunFolder

    beside = args.checkpoint if is_model_folder(args.checkpoint) else location(args.checkpoint, args.options).parent
    out = RunFolder(location(args.out or beside, args.options))  # a bucket's: copied up
    out.check()
    return out


def _store(args) -> int:
    from pipeline.store.reader import ShardReader
    from training.checkpoint import load_model, recovery_of
    from training.data import holdout_mask

    with first_contact():  # an endpoint that does not answer is reported within seconds
        reachable(args.checkpoint, options=args.options)
        reader = ShardReader(location(args.store, args.options))  # the one open of the store
    n = reader.n
    model, cfg, step = load_model(location(args.checkpoint, args.options), args.device)
    device = next(model.parameters()).device
    recovery = recovery_of(cfg, args.recovery)
    idx = np.arange(n) if args.split == "all" else np.flatnonzero(holdout_mask(n, cfg["holdout"]))
    if len(idx) == 0:
        idx = np.arange(n)
    if args.max_images:
        idx = idx[: args.max_images]
    out = _output(args)
    size = cfg["size"] or 224
    metrics = evaluate(model, reader, idx, device, size, cfg["head"], recovery, args.guided)
    out.local.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint": args.checkpoint, "store": args.store, "split": args.split, "step": step}
    meta |= {"variant": cfg["variant"], "head": cfg["head"], "recovery": recovery, "protocol": "store"}
    print(write_report(out.local, "evaluation", metrics, meta).read_text())
    out.publish()
    out.release()
    return 0


def _protocol(args) -> int:
    from training import fid
    from training.checkpoint import load_model, recovery_of
    from training.field_eval import evaluate_protocol, write_protocol_report
    from training.protocols import PROTOCOLS, select

    with first_contact():
        reachable(args.checkpoint, args.source, options=args.options)
    protocol = PROTOCOLS[args.protocol]
    source = location(args.source, args.options)
    selected = select(source, "val", protocol, args.max_images)  # a source without its images: refused first
    weights = None if args.no_fid else fid.resolve_weights(args.fid_weights)  # refused here, before any work
    model, cfg, step = load_model(location(args.checkpoint, args.options), args.device)
    device = next(model.parameters()).device
    extractor = fid.Extractor(weights, args.fid_mode, device) if weights else None
    recovery = recovery_of(cfg, args.recovery)
    out = _output(args)
    images = out.local / f"evaluation-{protocol.name}" if args.save_images else None
    metrics = evaluate_protocol(model, cfg, device, recovery, protocol, source, "val", args.max_images, extractor,
                                images=images, selected=selected)  # fmt: skip
    meta = {"checkpoint": args.checkpoint, "step": step, "variant": cfg["variant"], "head": cfg["head"],
            "recovery": recovery, "split": protocol.name, "store": f"ImageNet {protocol.name}"}  # fmt: skip
    print(write_protocol_report(out.local, metrics, meta).read_text())
    out.publish()
    out.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
