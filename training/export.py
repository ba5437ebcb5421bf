"""Export a trained model: `colorize-export CHECKPOINT_OR_RUN --out DIR [--onnx]`.

DIR becomes a model folder in the Hugging Face layout (`training.modelfolder`): model.safetensors, config.json,
README.md (the model card, its metrics those of the run's evaluations: evaluation.json, evaluation-val5k.json,
evaluation-val50k.json), and with --onnx model.onnx, whose outputs are checked against PyTorch's on the spot. A
run folder exports its checkpoint-last.pt, the checkpoint its evaluations score; a checkpoint file takes the
evaluations beside it only when they score it.
"""

import json
import sys

from pipeline.common.cli import ArgumentParser, Refused, command, one_line
from pipeline.common.extras import require
from pipeline.storage import first_contact, location, reachable
from pipeline.storage.files import atomic_write
from training import checkpoint, modelcard, modelfolder


def resolve(source: str) -> tuple[str, list[dict]]:
    """(the checkpoint to export, the evaluations beside it that score it: store, val5k, val50k)."""
    place = location(source)
    if not place.is_file():  # a run folder (or nothing there: said so)
        ckpt = place / "checkpoint-last.pt"
        if not ckpt.is_file():
            raise Refused(f"{source}: no checkpoint-last.pt in it (a run folder) and not a checkpoint file")
        return str(ckpt), _evaluations(place, "checkpoint-last.pt")
    return source, _evaluations(place.parent, place.name)


def _evaluations(folder, checkpoint_name: str) -> list[dict]:
    found = [_evaluation(folder / name, checkpoint_name) for name in modelcard.PROTOCOL_FILES]
    return [e for e in found if e is not None]


def _evaluation(path, checkpoint_name: str) -> dict | None:
    try:
        evaluation = modelcard.read_evaluation(modelfolder.read_json(path)) if path.exists() else None
    except (OSError, ValueError):  # unreadable, or not an evaluation: the card says it was not evaluated
        return None
    scored = str((evaluation or {}).get("checkpoint", "")).rstrip("/").rsplit("/", 1)[-1]
    return evaluation if scored == checkpoint_name else None


def check_out(out: str) -> None:
    """Refuse an --out that holds anything but a model folder: the export writes README.md and config.json, which
    a run folder, for one, holds too."""
    folder = location(out)
    folders, files = folder.entries()
    names = folders + files or (["(a file)"] if folder.exists() else [])
    if names and not (modelfolder.CONFIG in names and _is_ours(folder)):
        raise Refused(f"--out {out} holds {sorted(names)[0]} and is not a model folder: choose another --out")
    if pickled := sorted(n for n in names if n.lower().endswith(modelfolder.PICKLES)):
        raise Refused(f"--out {out} holds {pickled[0]}, a pickle, which would make the folder refused: remove it")


def _is_ours(folder) -> bool:
    try:
        return modelfolder.read_json(folder / modelfolder.CONFIG).get("format") == modelfolder.FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def export(source: str, out: str, onnx: bool = False, evaluations: list[dict] | None = None) -> dict:
    """Write the model folder `out` of a checkpoint or run folder; returns its config."""
    check_out(out)
    ckpt, found = resolve(source)
    evaluations = evaluations or found
    state = checkpoint.load(ckpt)
    model, _, _ = checkpoint.load_model(ckpt, "cpu")
    config = modelfolder.model_config(state, model)
    if problem := modelfolder.out_of_bounds(config):
        raise Refused(f"{ckpt}: a model folder cannot hold this model ({problem})")
    folder = location(out)
    name = folder.name or "model"
    files = {modelfolder.WEIGHTS: modelfolder.weights_bytes(model),
             modelfolder.CONFIG: (json.dumps(config, indent=1) + "\n").encode(),
             modelfolder.CARD: modelcard.card(name, config, evaluations, onnx).encode()}  # fmt: skip
    if onnx:
        import tempfile
        from pathlib import Path

        from training.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, config, Path(tmp) / modelfolder.ONNX)
            files[modelfolder.ONNX] = (Path(tmp) / modelfolder.ONNX).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)  # a bucket's prefix needs no making
    for name_, data in files.items():
        atomic_write(folder / name_, data)
    stale = folder / modelfolder.ONNX
    if not onnx and stale.exists():
        stale.unlink()  # an earlier export's graph: it would not be these weights
    return config


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="colorize-export", description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN", help="a checkpoint, or a run folder (its checkpoint-last.pt)")
    p.add_argument("--out", required=True, help="the model folder to write (local or a URL)")
    p.add_argument("--onnx", action="store_true", help="also model.onnx (dynamic batch, height and width)")
    p.add_argument("--evaluation", action="append", help="an evaluation json of this checkpoint, once per "
                   "protocol (default: the run's own evaluation*.json that score it)")  # fmt: skip
    args = p.parse_args(argv)
    if args.onnx:
        require("export", "colorize-export --onnx")
    with first_contact():
        reachable(args.source, args.out)
    evaluations = []
    for given in args.evaluation or []:
        try:
            evaluations.append(modelcard.read_evaluation(modelfolder.read_json(location(given))))
        except (OSError, ValueError) as e:
            raise Refused(f"--evaluation {given}: {one_line(e)[:160]}") from None
    config = export(args.source, args.out, args.onnx, evaluations)
    files = [modelfolder.WEIGHTS, modelfolder.CONFIG, modelfolder.CARD] + ([modelfolder.ONNX] if args.onnx else [])
    print(f"{args.out}: {', '.join(files)} ({config['system']}, step {config['training']['step']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
