"""The model card (README.md of a model folder): YAML that the Hugging Face Hub and `huggingface_hub.ModelCard`
parse, with a `model-index` whose figures are the run's own evaluation (evaluation.json, unrounded), then what
the model is, how it was trained, its evaluation beside the gray baseline, its limits and its use."""

from pathlib import PurePosixPath

from pipeline.common.cli import Refused
from training.fid import MODES
from training.modelconfig import number
from training.protocols import NAMES as PROTOCOLS
from training.published import FIGURES

ONNX_FILE = "model.onnx"
METRICS = {  # evaluation.json's key: (the model-index's type, its name)
    "psnr": ("psnr", "PSNR (dB)"),
    "ssim": ("ssim", "SSIM"),
    "mae": ("mae", "MAE (8-bit levels)"),
    "colourfulness": ("colorfulness", "Colourfulness (Hasler and Suesstrunk)"),
    "auc": ("auc", "AuC of the ab error, 0-150 (Zhang et al.)"),
    "auc_rebalanced": ("auc_rebalanced", "AuC, class-rebalanced"),
    "overflow": ("colour_overflow", "Colour overflow (share of near-neutral pixels painted)"),
    "fid": ("fid", "FID (clean-fid's TTUR Inception)"),
    "cf": ("colorfulness_cf", "CF (absolute opponent channels, as CT2 and DDColor compute it)"),
    "delta_cf": ("delta_cf", "ΔCF, difference of the mean CFs"),
    "delta_cf_images": ("delta_cf_per_image", "ΔCF, mean of the per-image differences"),
}
PROTOCOL_FILES = ("evaluation.json", "evaluation-val5k.json", "evaluation-val50k.json")  # colorize-evaluate's
CITATION = """@article{wang2022colorful,
  title   = {Colorful Image Colorization with Classification and Asymmetric Feature Fusion},
  author  = {Wang, Zhiyuan and Yu, Yi and Li, Daqun and Wan, Yuanyuan and Li, Mingyang},
  journal = {Sensors},
  volume  = {22},
  number  = {20},
  pages   = {8010},
  year    = {2022},
  doi     = {10.3390/s22208010}
}"""


PUBLISHED = "; ".join(
    f"{p.system} on {p.protocol}: FID {p.fid}, CF {p.cf}, ΔCF {p.delta_cf}, PSNR {p.psnr} ({p.source}, published)"
    for p in FIGURES
)


def _name(path: str | None) -> str:
    return PurePosixPath(str(path or "unknown").rstrip("/")).name or "unknown"


def protocol(evaluation: dict, config: dict) -> str:
    size, recovery = config["input"]["size"], evaluation.get("recovery") or config["recovery"]
    if evaluation.get("protocol", "store") != "store":
        fid = evaluation.get("fid") or {}
        note = f" ({evaluation['note']})" if evaluation.get("note") else ""
        mode = f"; FID mode {fid['mode']}" if "fid" in evaluation["model"] else ""
        return (f"{evaluation['protocol']}: {evaluation['images']} images{note}, {evaluation.get('about')}; "
                f"recovery {recovery}{mode}")  # fmt: skip
    return (f"{evaluation['images']} images of {_name(evaluation.get('store'))} ({evaluation.get('split')}), "
            f"the store's centre crops at {size} x {size}, recovery {recovery}, "
            "RGB from the full L and the predicted (a, b) (colorize-evaluate)")  # fmt: skip


def _result(evaluation: dict, config: dict) -> dict:
    metrics = [{"type": t, "name": label, "value": float(evaluation["model"][k])}
               for k, (t, label) in METRICS.items() if k in evaluation["model"]]  # fmt: skip
    if evaluation.get("protocol", "store") != "store":
        dataset = {"name": f"ImageNet {evaluation['protocol']}", "type": "imagenet-1k", "split": "validation"}
    else:
        store = _name(evaluation.get("store"))
        dataset = {"name": store, "type": store, "split": str(evaluation.get("split"))}
    dataset["args"] = {"protocol": protocol(evaluation, config)}
    return {"task": {"type": "image-to-image", "name": "Image colorization"}, "dataset": dataset, "metrics": metrics}


def front_matter(name: str, config: dict, evaluations: list[dict]) -> dict:
    meta = {
        "license": "mit",
        "library_name": "colorize",
        "tags": ["image-colorization", "colorization", config["system"], "safetensors", "pytorch"],
        "pipeline_tag": "image-to-image",
        "datasets": [_name(config["training"]["store"].get("path"))],
    }
    if evaluations:
        meta["model-index"] = [{"name": name, "results": [_result(e, config) for e in evaluations]}]
    return meta


def _table(evaluation: dict) -> list[str]:
    rows = ["| metric | this model | gray input |", "|---|---|---|"]
    for k, (_, label) in METRICS.items():
        if k in evaluation["model"]:
            gray = evaluation.get("gray", {}).get(k)
            rows.append(f"| {label} | {evaluation['model'][k]:.4g} | {'' if gray is None else f'{gray:.4g}'} |")
    return rows


def card(name: str, config: dict, evaluations: list[dict], onnx: bool) -> str:
    """README.md of the model folder `name`."""
    import yaml

    tc, tr = config["train_config"], config["training"]
    store = tr["store"]
    lines = ["---", yaml.safe_dump(front_matter(name, config, evaluations), sort_keys=False).rstrip(), "---", "",
             f"# {name}", "",
             f"Automatic colorization of gray photos: `{config['system']}` at width {config['width']} from "
             f"{config['paper']}, trained with the `colorize` project. Input: CIE L / 100 at any size that is a "
             "multiple of 32 (trained at "
             f"{config['input']['size']} x {config['input']['size']}); output: {config['outputs']['colour']}, "
             f"recovered to (a, b) by `{config['recovery']}` (T = {config['T']}) and joined with the photo's full-"
             "resolution L.", "",
             "## Training", "",
             f"- recipe: head `{config['head']}`, optimiser `{tc.get('optimizer') or 'its own'}`, rate {tc.get('lr')}, "
             f"batch {tc.get('batch_size')}, {tr['step']:,} steps ({tr['images_seen']:,} images seen)",
             f"- data: `{store.get('path')}` ({store.get('images', '?')} images, build {store.get('build_id') or '?'})",
             f"- balance prior: {config['prior']}, lambda {config['balance_lambda']}", ""]  # fmt: skip
    if evaluations:
        lines += ["## Evaluation", ""]
        for evaluation in evaluations:
            lines += [f"Protocol: {protocol(evaluation, config)}.", "", *_table(evaluation), ""]
        if any(e.get("protocol", "store") != "store" for e in evaluations):
            lines += [f"Published figures on these protocols, beside which to read them: {PUBLISHED}.", ""]
    else:
        lines += ["## Evaluation", "", "No evaluation.json was found beside the checkpoint: not evaluated.", ""]
    lines += ["## Limits", "",
              "- Colours are plausible, not true: the model guesses them from gray levels and what it saw in "
              "training; it knows only the classes and scenes of its training data.",
              "- A model trained on a small store or for few steps paints near-neutral regions with colour "
              "(the overflow figure above); see the project's docs/performance.md.",
              "- Do not use it to recover historical colours as evidence.", "",
              "## Usage", "", "```bash",
              "colorize --model DIR photo.jpg --out colored/        # PyTorch",
              *([f"colorize --onnx DIR/{ONNX_FILE} photo.jpg --out colored/  # no torch"] if onnx else []),
              "colorize-train --init DIR --store S --out runs/ft    # fine-tune on your store",
              "```", "", "## Citation", "", "```bibtex", CITATION, "```", ""]  # fmt: skip
    return "\n".join(lines)


def read_evaluation(data) -> dict:
    """An evaluation.json's contents (`colorize-evaluate`), checked: its figures finite numbers, its names text;
    Refused, naming what is wrong, otherwise."""

    def figures(d) -> bool:
        return isinstance(d, dict) and all(number(d[k], (int, float)) for k in METRICS if k in d)

    if not isinstance(data, dict) or not figures(data.get("model")) or not any(k in data["model"] for k in METRICS):
        raise Refused("not an evaluation.json of colorize-evaluate (no figures of the model)")
    if "gray" in data and not figures(data["gray"]):
        raise Refused("its gray baseline's figures are not numbers")
    if not number(data.get("images")) or data["images"] < 0:
        raise Refused("its image count is not a number")
    if not all(isinstance(data.get(k, ""), str) for k in ("store", "split", "checkpoint", "recovery", "about", "note")):
        raise Refused("its store, split, checkpoint, recovery or protocol's description is not text")
    if data.get("protocol", "store") not in PROTOCOLS:
        raise Refused(f"its protocol is not one of {', '.join(PROTOCOLS)}")
    if "fid" in data["model"] and (not isinstance(data.get("fid"), dict) or data["fid"].get("mode") not in MODES):
        raise Refused("its FID names no mode of clean-fid")
    return data
