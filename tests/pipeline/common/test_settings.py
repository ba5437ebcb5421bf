"""One source per setting: the flow's parameters and every command line's flags come from the dataclasses."""

import argparse
import dataclasses
import inspect

import pytest

from flows.preprocess import RunOptions, main, preprocess_imagenet
from pipeline.common.settings import add_flags, given
from pipeline.config import PreprocessConfig
from training.config import TrainConfig


def test_the_flow_parameters_are_the_config_fields():
    fields = {f.name: f for cls in (PreprocessConfig, RunOptions) for f in dataclasses.fields(cls)}
    params = inspect.signature(preprocess_imagenet.fn).parameters
    assert list(params) == list(fields)
    for name, p in params.items():
        want = fields[name].default
        assert p.default == (inspect.Parameter.empty if want is dataclasses.MISSING else want), name
    schema = preprocess_imagenet.parameters.properties  # what a deployment's `-p name=value` is checked against
    assert set(schema) == set(fields) and set(preprocess_imagenet.parameters.required) == {"source", "store"}


@pytest.mark.parametrize("settings", [PreprocessConfig, TrainConfig])
def test_every_field_is_a_flag_and_only_given_flags_override(settings):
    p = argparse.ArgumentParser()
    add_flags(p, settings, positional=("source",) if settings is PreprocessConfig else ())
    flags = {a.dest for a in p._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(settings)}
    args = p.parse_args(["SRC"] if settings is PreprocessConfig else ["--lr", "0.5", "--no-channels-last"])
    assert given(args, settings) == (
        {"source": "SRC"} if settings is PreprocessConfig else {"lr": 0.5, "channels_last": False}
    )


def test_class_subsets_from_a_flag_or_a_parameter(tmp_path):
    assert PreprocessConfig(source="x", classes="n01, n02").classes == ("n01", "n02")
    (tmp_path / "c.txt").write_text("n03 tench\nn04 goldfish\n")
    assert PreprocessConfig(source="x", classes=str(tmp_path / "c.txt")).classes == ("n03", "n04")
    with pytest.raises(ValueError, match="multiple of 4"):
        PreprocessConfig(source="x", size=30)


def test_the_command_line_refuses_what_the_config_refuses(tmp_path, capsys):
    (tmp_path / "train" / "c").mkdir(parents=True)
    assert main([str(tmp_path), str(tmp_path / "s.zarr"), "--grayscale", "maybe"]) == 2
    assert "grayscale" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "s.zarr"), "--gpus", "2", "--workers", "3"]) == 2
    assert not (tmp_path / "s.zarr").exists()
