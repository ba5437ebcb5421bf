"""What a console script says no to in one line (exit code 2) and what it lets through as a traceback: `Refused`
(input it cannot take), `Unusable` (data that is there but cannot be used, a damaged store) and an OSError are
refusals; a plain ValueError, or any other exception, is a bug."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.common.cli import Refused, Unusable, command
from pipeline.storage.client import TooLarge
from pipeline.store.format import StoreError
from tests.conftest import make_store
from training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _script(error: BaseException):
    @command
    def main(argv=None) -> int:
        raise error

    return main


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert not out and len(lines) == 1, (out, err)
    return lines[0]


def test_the_kinds_of_refusal():
    assert issubclass(Refused, ValueError)  # library callers that catch ValueError around a check still do
    assert not issubclass(Unusable, ValueError) and not issubclass(Unusable, Refused)
    assert issubclass(StoreError, Unusable) and not issubclass(StoreError, Refused)
    assert not issubclass(StoreError, ValueError)
    assert issubclass(CheckpointError, Unusable) and not issubclass(CheckpointError, Refused)
    assert issubclass(TooLarge, Refused)  # an oversized file planted where a small one belongs


@pytest.mark.parametrize("error", [ValueError("a bug: math domain"), KeyError("k"), RuntimeError("bug")])
def test_a_bug_is_a_traceback_not_a_refusal(error, capsys):
    with pytest.raises(type(error)) as raised:
        _script(error)([])
    assert raised.value is error
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, line",
    [
        (Refused("--size 5: not a multiple of 4"), "error: --size 5: not a multiple of 4"),
        (StoreError("s.zarr is damaged: 1 shard file(s) missing"), "error: s.zarr is damaged: 1 shard file(s) missing"),
        (Unusable("run.pt is not a whole checkpoint\n file"), "error: run.pt is not a whole checkpoint file"),
        (FileNotFoundError(2, "No such file or directory", "in.jpg"), "error: in.jpg: No such file or directory"),
        (TooLarge("big.json", 100, 10), "error: big.json: 100 bytes, more than the 10 it may hold"),
    ],
)
def test_a_refusal_is_one_line_and_exit_2(error, line, capsys):
    assert _script(error)([]) == 2
    assert _one_line(capsys) == line


@pytest.mark.parametrize("error", [Refused("no"), StoreError("damaged")])
def test_colorize_traceback_shows_a_refusals_traceback(error, monkeypatch):
    monkeypatch.setenv("COLORIZE_TRACEBACK", "1")
    with pytest.raises(type(error)):
        _script(error)([])


def test_a_console_script_ends_a_bug_with_its_traceback(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent("""
        import sys
        from pipeline.common.cli import command

        @command
        def main(argv=None):
            return int("twelve")  # a bug, not the user's input

        sys.exit(main())
    """))  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # this checkout's package, whatever the interpreter has installed
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done
    assert "Traceback (most recent call last)" in done.stderr and "ValueError: invalid literal" in done.stderr
    assert "error:" not in done.stderr.replace("ValueError:", "")


def test_training_refuses_a_bad_setting(tmp_path, capsys):
    from training.run import main

    argv = ["--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "run"), "--holdout", "1"]
    with pytest.raises(Refused, match=r"holdout must be in \[0, 1\), got 1.0"):
        main.__wrapped__(argv)  # the command's own main: the check raises Refused, not a ValueError
    capsys.readouterr()
    assert main(argv) == 2
    assert _one_line(capsys) == "error: holdout must be in [0, 1), got 1.0"
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("refusals"), n=8)[0]


def test_training_refuses_a_store_with_a_missing_shard(store, tmp_path, capsys):
    from training.run import main

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    (damaged / "L" / "c" / "1" / "0" / "0").unlink()
    argv = ["--store", str(damaged), "--out", str(tmp_path / "run"), "--steps", "1", "--size", "64", "--width", "0.125"]
    with pytest.raises(StoreError):
        main.__wrapped__(argv)
    capsys.readouterr()
    assert main(argv) == 2
    assert _one_line(capsys) == f"error: {damaged}: shard L/c/1/0/0 is missing (image 4)"
    assert not (tmp_path / "run").exists()


def test_the_quality_check_refuses_a_store_whose_slots_do_not_read(store, tmp_path, capsys):
    from pipeline.check import main

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    (damaged / "slots" / "c" / "0").write_bytes(b"not zstd")
    argv = [str(damaged), "--out", str(tmp_path / "q"), "--sample", "2"]
    with pytest.raises(StoreError, match="array slots does not read"):
        main.__wrapped__(argv)
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith("error: ") and "damaged.zarr: array slots does not read" in line, line


def test_a_class_subset_file_that_is_not_text_is_refused(tmp_path, capsys):
    from flows.preprocess import main

    (tmp_path / "classes.txt").write_bytes(b"\xff\xfe n01440764\n")
    argv = [str(tmp_path / "source"), str(tmp_path / "s.zarr"), "--classes", str(tmp_path / "classes.txt")]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'classes.txt'}: not a text file ('utf-8' codec can't decode"), line
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    "key,value",
    [("lambda", "abc"), ("lambda", float("nan")), ("lambda", 2), ("lambda", True), ("config", [1]),
     ("config", {"source": 5}), ("config", {"size": "x"}), ("counts", "x"), ("classes", "abc"), ("classes", [1, 2]),
     ("build_id", 5)],
)  # fmt: skip
@pytest.mark.parametrize("script", ["training.run", "pipeline.check"])
def test_a_hostile_store_attribute_is_refused_in_one_line(store, tmp_path, capsys, script, key, value):
    import importlib
    import json

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    meta = json.loads((damaged / "zarr.json").read_text())
    meta["attributes"][key] = value
    (damaged / "zarr.json").write_text(json.dumps(meta))
    main = importlib.import_module(script).main
    if script == "pipeline.check":  # the quality check reports the store as failing it: exit 1, the reason named
        assert main([str(damaged), "--out", str(tmp_path / "q")]) == 1
        said = capsys.readouterr()
        assert f"FAILED: store opens and is complete: {damaged}: " in said.out + said.err and key in said.err
        return
    argv = ["--store", str(damaged), "--out", str(tmp_path / "run"), "--steps", "1", "--size", "64", "--width", "0.125"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert str(damaged) in line and key in line, line
