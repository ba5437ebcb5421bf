"""The console scripts' contract, as a matrix: every script against every kind of bad input it can be given.

Each must answer with one line on stderr naming what is wrong, exit code 2, nothing on stdout, and nothing
written (the working folder and every path named are as before). Run in this process (`main(argv)`, as the
console scripts call it), plus one real console-script run per script to show the entry points keep it too.
"""

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import benchmarks.__main__ as bench
import flows.preprocess as preprocess
import flows.server as server
import pipeline.check as check
import training.colorize as colorize
import training.demo as demo
import training.evaluate as evaluate
import training.export as export
import training.onnx_colorize as onnx_colorize
import training.run as train
from training.run import TrainConfig

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture(scope="module")
def inputs(tiny_store, tmp_path_factory) -> dict[str, str]:
    """Paths of good and bad inputs, by name."""
    store, source = tiny_store
    tmp = tmp_path_factory.mktemp("inputs")
    run = tmp / "run"
    train.train(TrainConfig(store=str(store), out=str(run), width=1 / 8, size=64, batch_size=4, steps=1,
                            holdout=0.25, eval_images=2, tensorboard=False))  # fmt: skip
    good = torch.load(run / "checkpoint-last.pt", weights_only=True)
    (tmp / "list.pt").write_bytes(b"")
    torch.save([1, 2, 3], tmp / "list.pt")
    torch.save({k: v for k, v in good.items() if k != "config"}, tmp / "noconfig.pt")
    torch.save(good | {"config": good["config"] | {"width": 0.25}}, tmp / "shape.pt")
    torch.save(good | {"config": good["config"] | {"size": -64}}, tmp / "negsize.pt")
    os.mkfifo(tmp / "fifo.JPEG")
    torch.save({"model": Evil(), "config": {}, "step": 0}, tmp / "code.pt")
    (tmp / "pickle.pt").write_bytes(pickle.dumps(Evil()))
    (tmp / "garbage.pt").write_bytes(os.urandom(300))
    (tmp / "file.txt").write_text("a regular file\n")
    (tmp / "notastore").mkdir()
    (tmp / "notastore" / "notes.txt").write_text("x")
    photo = next(source.rglob("*.JPEG"))
    (tmp / "imagenet" / "val").mkdir(parents=True)  # one validation image, for the protocols
    (tmp / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(photo.read_bytes())
    configs = {
        "tag.yaml": 'lr: !!python/object/apply:os.system ["touch pwned"]\n',
        "syntax.yaml": "lr: [0.1\nsteps: 3\n",
        "string.yaml": 'batch_size: "16"\n',
        "fast.yaml": "lr: fast\n",
        "unknown.yaml": "learning_rate: 0.1\n",
        "list.yaml": "- 1\n- 2\n",
        "nan.json": '{"lr": NaN}',
        "bad.json": '{"lr": 0.1,',
        "deep.yaml": "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "deep.json": '{"x": ' + "[" * 5000 + "]" * 5000 + "}",
    }
    for name, text in configs.items():
        (tmp / name).write_text(text)
    paths = {"store": str(store), "source": str(source), "checkpoint": str(run / "checkpoint-last.pt")}
    paths |= {p.name: str(p) for p in tmp.iterdir()} | {"photo": str(photo), "missing": str(tmp / "no" / "such")}
    paths["below_file"] = str(tmp / "file.txt" / "out")
    paths["val"] = str(tmp / "imagenet")
    return paths


def _demo_busy_port() -> list[str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _BUSY.append(s)
    return ["--port", str(s.getsockname()[1])]


_BUSY: list[socket.socket] = []

# Each script: its main, and for each kind of bad input the arguments that give it (p: the paths above).
SCRIPTS = {
    "colorize-train": (train.main, {
        "not a number": lambda p: ["--store", p["store"], "--size", "abc"],
        "out of range": lambda p: ["--store", p["store"], "--size", "0"],
        "out of range 2": lambda p: ["--store", p["store"], "--steps", "-1"],
        "not finite": lambda p: ["--store", p["store"], "--lr", "nan"],
        "missing input": lambda p: ["--store", p["missing"]],
        "file for a folder": lambda p: ["--store", p["file.txt"]],
        "not a store": lambda p: ["--store", p["notastore"]],
        "folder for a file": lambda p: ["--store", p["store"], "--config", p["notastore"]],
        "uncreatable out": lambda p: ["--store", p["store"], "--out", p["below_file"], "--steps", "1"],
        "out is a file": lambda p: ["--store", p["store"], "--out", p["file.txt"], "--steps", "1"],
        "resume missing": lambda p: ["--store", p["store"], "--resume", p["missing"]],
        "resume list": lambda p: ["--store", p["store"], "--resume", p["list.pt"]],
        "resume code": lambda p: ["--store", p["store"], "--resume", p["code.pt"]],
        "bad prior": lambda p: ["--store", p["store"], "--prior", p["garbage.pt"]],
        "missing prior": lambda p: ["--store", p["store"], "--prior", p["missing"]],
        "out of range 3": lambda p: ["--store", p["store"], "--balance-lambda", "2"],
        "not a choice": lambda p: ["--store", p["store"], "--schedule", "cosine"],
        "URL with #": lambda p: ["--store", "s3://bkt/s.zarr#x"],
        "relative file URL": lambda p: ["--store", "file://mystore.zarr"],
        "out URL with ?": lambda p: ["--store", p["store"], "--out", "s3://bkt/run?x=1"],
        "infinite cache limit": lambda p: ["--store", p["store"], "--cache-limit", "inf"],
        "infinite preload": lambda p: ["--store", p["store"], "--preload", "inf"],
        "storage option inf": lambda p: ["--store", p["store"], "--storage-option", "retry_timeout=inf"],
        "storage option negative": lambda p: ["--store", p["store"], "--storage-option", "max_retries=-1"],
        "credential option": lambda p: ["--store", p["store"], "--storage-option", "account_key=abc"],
        "out holds a run": lambda p: ["--store", p["store"], "--out", str(Path(p["checkpoint"]).parent)],
        "zero ddp timeout": lambda p: ["--store", p["store"], "--ddp-timeout", "0"],
        "out in the store": lambda p: ["--store", p["store"], "--out", str(Path(p["store"]) / "run")],
        "init missing": lambda p: ["--store", p["store"], "--init", p["missing"]],
        "init code": lambda p: ["--store", p["store"], "--init", p["code.pt"]],
        "init of another width": lambda p: ["--store", p["store"], "--init", p["checkpoint"]],
        "init a run folder": lambda p: ["--store", p["store"], "--init", str(Path(p["checkpoint"]).parent)],
        "photos and a store": lambda p: ["--store", p["store"], "--photos", p["source"]],
        "photos none there": lambda p: ["--photos", p["notastore"], "--out", "r", "--size", "64"],
        **{f"config {name}": (lambda p, name=name: ["--store", p["store"], "--config", p[name]])
           for name in ("tag.yaml", "syntax.yaml", "string.yaml", "fast.yaml", "unknown.yaml", "list.yaml",
                        "nan.json", "bad.json", "deep.yaml", "deep.json")},
    }),
    "colorize-evaluate": (evaluate.main, {
        "not a number": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["store"], "--max-images", "x"],
        "out of range": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["store"], "--max-images", "-1"],
        "not finite": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["store"], "--guided", "inf"],
        "missing input": lambda p: ["--checkpoint", p["missing"], "--store", p["store"]],
        "missing store": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["missing"]],
        "file for a folder": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["file.txt"]],
        "not a store": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["notastore"]],
        "folder for a file": lambda p: ["--checkpoint", p["notastore"], "--store", p["store"]],
        "uncreatable out": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["store"], "--out", p["below_file"]],
        "out is a file": lambda p: ["--checkpoint", p["checkpoint"], "--store", p["store"], "--out", p["file.txt"]],
        "store URL with ?": lambda p: ["--checkpoint", p["checkpoint"], "--store", "s3://bkt/s.zarr?x=1"],
        "protocol, no source": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k"],
        "protocol, not val images": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k",
                                               "--source", p["source"]],  # fmt: skip
        "protocol, missing source": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val50k",
                                               "--source", p["missing"]],  # fmt: skip
        "protocol, fid weights a file of text": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k",
                                                           "--source", p["val"], "--fid-weights", p["file.txt"]],
        "protocol, fid weights a pickle": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k",
                                                     "--source", p["val"], "--fid-weights", p["code.pt"]],
        "protocol and a store": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k", "--store",
                                           p["store"], "--source", p["val"]],  # fmt: skip
        "bad fid mode": lambda p: ["--checkpoint", p["checkpoint"], "--protocol", "val5k", "--source", p["val"],
                                   "--fid-mode", "tf"],  # fmt: skip
        **{f"checkpoint {name}": (lambda p, name=name: ["--checkpoint", p[name], "--store", p["store"]])
           for name in ("list.pt", "noconfig.pt", "shape.pt", "negsize.pt", "code.pt", "pickle.pt", "garbage.pt")},
    }),
    "colorize": (colorize.main, {
        "not a number": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", "o", "--max-pixels", "x"],
        "not finite": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", "o",
                                 "--reference", p["photo"], "--reference-strength", "nan"],
        "missing input": lambda p: ["--checkpoint", p["checkpoint"], p["missing"], "--out", "o"],
        "a FIFO for a photo": lambda p: ["--checkpoint", p["checkpoint"], p["fifo.JPEG"], "--out", "o"],
        "missing checkpoint": lambda p: ["--checkpoint", p["missing"], p["photo"], "--out", "o"],
        "folder for a file": lambda p: ["--checkpoint", p["notastore"], p["photo"], "--out", "o"],
        "missing reference": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", "o",
                                        "--reference", p["missing"]],
        "uncreatable out": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", p["below_file"]],
        "out is a file": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", p["file.txt"]],
        **{f"checkpoint {name}": (lambda p, name=name: ["--checkpoint", p[name], p["photo"], "--out", "o"])
           for name in ("list.pt", "noconfig.pt", "shape.pt", "negsize.pt", "code.pt", "pickle.pt", "garbage.pt")},
    }),
    "colorize-demo": (demo.main, {
        "not a number": lambda p: ["--checkpoint", p["checkpoint"], "--port", "abc"],
        "out of range": lambda p: ["--checkpoint", p["checkpoint"], "--port", "-1"],
        "port in use": lambda p: ["--checkpoint", p["checkpoint"], *_demo_busy_port()],
        "missing checkpoint": lambda p: ["--checkpoint", p["missing"], "--port", "0"],
        **{f"checkpoint {name}": (lambda p, name=name: ["--checkpoint", p[name], "--port", "0"])
           for name in ("list.pt", "noconfig.pt", "shape.pt", "code.pt", "garbage.pt")},
    }),
    "colorize-export": (export.main, {
        "missing input": lambda p: [p["missing"], "--out", "m"],
        "folder for a file": lambda p: [p["notastore"], "--out", "m"],
        "uncreatable out": lambda p: [p["checkpoint"], "--out", p["below_file"]],
        "out is a file": lambda p: [p["checkpoint"], "--out", p["file.txt"]],
        "out holds a run": lambda p: [p["checkpoint"], "--out", str(Path(p["checkpoint"]).parent)],
        "not an evaluation": lambda p: [p["checkpoint"], "--out", "m", "--evaluation", p["bad.json"]],
        "out URL with #": lambda p: [p["checkpoint"], "--out", "s3://bkt/m#x"],
        **{f"checkpoint {name}": (lambda p, name=name: [p[name], "--out", "m"])
           for name in ("list.pt", "noconfig.pt", "shape.pt", "negsize.pt", "code.pt", "pickle.pt", "garbage.pt")},
    }),
    "colorize --onnx": (onnx_colorize.dispatch, {
        "missing model": lambda p: ["--onnx", p["missing"], p["photo"], "--out", "o"],
        "not an ONNX file": lambda p: ["--onnx", p["garbage.pt"], p["photo"], "--out", "o"],
        "a FIFO for a model": lambda p: ["--onnx", p["fifo.JPEG"], p["photo"], "--out", "o"],
        "not a number": lambda p: ["--onnx", p["garbage.pt"], p["photo"], "--out", "o", "--max-pixels", "x"],
    }),
    "colorize-quality": (check.main, {
        "not a number": lambda p: [p["store"], "--sample", "x", "--out", "q"],
        "out of range": lambda p: [p["store"], "--sample", "-1", "--out", "q"],
        "missing input": lambda p: [p["missing"], "--out", "q"],
        "file for a folder": lambda p: [p["file.txt"], "--out", "q"],
        "not a store": lambda p: [p["notastore"], "--out", "q"],
        "uncreatable out": lambda p: [p["store"], "--out", p["below_file"]],
        "out is a file": lambda p: [p["store"], "--out", p["file.txt"]],
        "bad prior": lambda p: [p["store"], "--out", "q", "--zhang-prior", p["garbage.pt"]],
        "percent-encoded URL": lambda p: ["s3://bkt/a%2Fb.zarr", "--out", "q"],
    }),
    "colorize-preprocess": (preprocess.main, {
        "not a number": lambda p: [p["source"], "s.zarr", "--size", "abc"],
        "out of range": lambda p: [p["source"], "s.zarr", "--size", "0"],
        "out of range 2": lambda p: [p["source"], "s.zarr", "--workers", "0"],
        "not finite": lambda p: [p["source"], "s.zarr", "--lam", "nan"],
        "out of range 3": lambda p: [p["source"], "s.zarr", "--max-pixels", "0"],
        "out of range 4": lambda p: [p["source"], "s.zarr", "--zstd-level", "999"],
        "missing input": lambda p: [p["missing"], "s.zarr"],
        "file for a folder": lambda p: [p["source"], p["file.txt"]],
        "source is a file": lambda p: [p["file.txt"], "s.zarr"],
        "not a store": lambda p: [p["source"], p["notastore"]],
        "not a store, overwrite": lambda p: [p["source"], p["notastore"], "--overwrite"],
        "store is the source": lambda p: [p["source"], p["source"], "--overwrite"],
        "uncreatable out": lambda p: [p["source"], p["below_file"]],
        "uncreatable quality out": lambda p: [p["source"], "s.zarr", "--quality-out", p["below_file"]],
        "percent-encoded store URL": lambda p: [p["source"], "s3://bkt/vic%74im.zarr"],
        "relative file URL": lambda p: [p["source"], "file://mystore.zarr"],
        "source URL with ?": lambda p: ["s3://bkt/src?x=1", "s.zarr"],
        "file URL with ..": lambda p: [p["source"], "file:///tmp/victim/../s.zarr"],
        "credential option": lambda p: [p["source"], "s.zarr", "--storage-option", "sse_customer_key_base64=abc"],
    }),
    "colorize-bench": (bench.main, {
        "not a name": lambda p: ["nonsense"],
        "missing input": lambda p: ["loader", "--store", p["missing"]],
        "not a store": lambda p: ["loader", "--store", p["notastore"]],
    }),
    "flows.server": (server.main, {
        "not a number": lambda p: ["start", "--port", "x"],
        "out of range": lambda p: ["start", "--port", "-1"],
        "port in use": lambda p: ["start", *_demo_busy_port()],
        "uncreatable out": lambda p: ["start", "--home", p["below_file"]],
    }),
}  # fmt: skip
CASES = [(script, kind) for script, (_, kinds) in SCRIPTS.items() for kind in kinds]


def tree(*roots: Path) -> dict[str, int]:
    """Every path below roots, with each file's modification time (a folder's own changes when a check creates
    and removes a folder in it, which leaves nothing)."""
    return {str(p): p.is_file() and p.stat().st_mtime_ns for r in roots if r.exists() for p in [r, *r.rglob("*")]}


@pytest.mark.parametrize(("script", "kind"), CASES, ids=[f"{s}: {k}" for s, k in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(script, kind, inputs, tmp_path, monkeypatch, capsys):
    main, kinds = SCRIPTS[script]
    argv = kinds[kind](inputs)
    monkeypatch.chdir(tmp_path)
    watched = [tmp_path, Path(inputs["file.txt"]).parent, Path(inputs["store"]), Path(inputs["source"])]
    before = tree(*watched)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (argv, out, err)
    assert len(lines) == 1 and "Traceback" not in err and not out, (argv, out, err)
    assert " at 0x" not in err and "weights_only" not in err, err  # no object addresses, no unsafe advice
    assert tree(*watched) == before, argv
    assert not Path("pwned").exists()


ONE_PER_SCRIPT = {
    "colorize-train": lambda p: ["--store", p["store"], "--size", "0"],
    "colorize-evaluate": lambda p: ["--checkpoint", p["code.pt"], "--store", p["store"]],
    "colorize": lambda p: ["--checkpoint", p["checkpoint"], p["photo"], "--out", p["file.txt"]],
    "colorize-demo": lambda p: ["--checkpoint", p["checkpoint"], "--port=-1"],
    "colorize-quality": lambda p: [p["file.txt"]],
    "colorize-preprocess": lambda p: [p["source"], p["source"], "--overwrite"],
    "colorize-bench": lambda p: ["loader", "--store", p["notastore"]],
    "colorize-export": lambda p: [p["code.pt"], "--out", "m"],
}


@pytest.mark.parametrize("script", list(ONE_PER_SCRIPT))
def test_the_installed_console_scripts_keep_the_contract(script, inputs, tmp_path):
    before = tree(Path(inputs["source"]), Path(inputs["store"]))
    r = subprocess.run([BIN / script, *ONE_PER_SCRIPT[script](inputs)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout, r.stderr
    assert tree(Path(inputs["source"]), Path(inputs["store"])) == before
    assert not list(tmp_path.iterdir())


def test_ctrl_c_on_the_prefect_server_is_one_line(tmp_path):
    import signal
    import time
    import urllib.request

    from flows.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "flows.server", "start", "--port", str(port), "--home", str(tmp_path / "home")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it: to the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "flows.server: stopped", err
