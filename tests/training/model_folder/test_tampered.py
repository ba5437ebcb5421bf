"""A tampered model folder (a pickle beside it, a forged config, weights cut short, of another dtype or a FIFO)
is refused in one line, before anything is written."""

import json
import os
from pathlib import Path

import pytest

from training.colorize import main as colorize


def tampered(folder: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "tampered"
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    change(out)
    return out


def _config(change):
    def edit(d: Path):
        config = json.loads((d / "config.json").read_text())
        change(config)
        (d / "config.json").write_text(json.dumps(config))

    return edit


def _retype(d: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    save_file({k: v.double() if v.is_floating_point() else v for k, v in weights.items()}, d / "model.safetensors")


def _drop_a_tensor(d: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    weights.pop("head.bias")
    save_file(weights, d / "model.safetensors")


def _pickle(d: Path):
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")


WIDTH = "do not fit the full it names (encoder.0.short.0.weight"
TAMPERED = {
    "a pickle beside it": (_pickle, "pytorch_model.bin, a pickle"),
    "another width": (_config(lambda c: c.update(width=0.25)), WIDTH),
    "another system": (_config(lambda c: c.update(system="unet")), "do not fit the unet it names"),
    "a layer missing": (_drop_a_tensor, "head.bias is missing"),
    "weights cut short": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:999]),
                          "does not read as safetensors"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{'system': "), "does not read as JSON"),
    "a foreign config": (lambda d: (d / "config.json").write_text('{"model_type": "x"}'), "not a model folder's"),
    "an unknown system": (_config(lambda c: c.update(system="evil")), "does not name a model this program builds"),
    "a forged class count": (_config(lambda c: c.update(n_classes=10**9)), "n_classes is missing or out of bounds"),
    "a forged size": (_config(lambda c: c["input"].update(size=33)), "input.size is missing or out of bounds"),
    "a size to run out of memory": (_config(lambda c: c["input"].update(size=8192)), "input.size is missing or out"),
    "a forged holdout": (_config(lambda c: c["train_config"].update(holdout="x")), "train_config.holdout is missing"),
    "a forged T": (_config(lambda c: c.update(T=0)), "T is missing or out of bounds"),
    "config nested deeply": (lambda d: (d / "config.json").write_text("[" * 99999 + "]" * 99999), "nested too deeply"),
    "config a FIFO": (lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")), "does not read as JSON"),
    "weights a FIFO": (lambda d: ((d / "model.safetensors").unlink(), os.mkfifo(d / "model.safetensors")),
                       "does not read as safetensors"),
    "weights of another dtype": (_retype, "is torch.float64, the model torch.float32"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_folder_is_refused_in_one_line(case, folder, photos, tmp_path, capsys):
    change, message = TAMPERED[case]
    bad = tampered(folder, tmp_path, change)
    assert colorize(["--model", str(bad), str(photos / "0.jpg"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()
