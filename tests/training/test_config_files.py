"""`--config FILE` against anything a file can hold: a valid configuration, or a one-line refusal; never a
traceback, never an object built from a YAML tag."""

import json
from dataclasses import fields

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.common.cli import Refused
from training.config import TrainConfig, read_config

NAMES = [f.name for f in fields(TrainConfig)]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SETTINGS = dict(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def outcome(path) -> TrainConfig | str:
    """The config a file gives, or the one line it is refused with."""
    try:
        values = read_config(path)
        return TrainConfig(**({"store": "s"} | values))
    except (Refused, ValueError) as e:
        message = str(e)
        assert message and "\n" not in message, message
        return message


@settings(**SETTINGS)
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".yaml", ".json"]))
def test_any_bytes_are_a_config_or_one_line(tmp_path, data, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(data)
    outcome(path)


@settings(**SETTINGS)
@given(values=st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), VALUES, max_size=4),
       as_yaml=st.booleans())  # fmt: skip
def test_any_mapping_is_a_config_or_one_line(tmp_path, values, as_yaml):
    path = tmp_path / ("c.yaml" if as_yaml else "c.json")
    path.write_text(yaml.safe_dump(values) if as_yaml else json.dumps(values))
    got = outcome(path)
    if isinstance(got, TrainConfig):  # accepted: every value has its field's type
        for name, value in values.items():
            assert type(getattr(got, name)) is type(value) or isinstance(value, int | float) or value is None, name


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system",
                                 "!!python/object:collections.OrderedDict {}", "!!binary aGk="])  # fmt: skip
def test_yaml_tags_never_build_objects(tmp_path, monkeypatch, tag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(f"lr: {tag}\n")
    assert isinstance(outcome(tmp_path / "c.yaml"), str)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("text", "says"), [
    ('batch_size: "16"\n', "batch_size must be int"), ("lr: fast\n", "lr must be float"),
    ("lr: [0.1\n", "not valid YAML (line 2"), ("- 1\n", "expected a mapping"), ("steps: -1\n", "steps must be >= 0"),
    ("size: 0\n", "size must be at least 32 for full"), ("lr: .nan\n", "lr must be float"),
    ("compile: 1\n", "compile must be bool"), ("1: 2\nlr: 0.1\n", "unknown settings 1"),
])  # fmt: skip
def test_the_refusal_names_the_setting(tmp_path, text, says):
    (tmp_path / "c.yaml").write_text(text)
    got = outcome(tmp_path / "c.yaml")
    assert isinstance(got, str) and says in got, got


@pytest.mark.parametrize("value", ['"secret_access_key=YAMLSECRET5"', '[{"secret_access_key": "YAMLSECRET8"}]',
                                   '["account_key=YAMLSECRET9"]', '{"session_token": "YAMLSECRET7"}'])  # fmt: skip
def test_a_secret_in_a_config_file_is_refused_without_being_repeated(value, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"storage_option: {value}\n")
    message = outcome(path)
    assert isinstance(message, str) and "YAMLSECRET" not in message, message
