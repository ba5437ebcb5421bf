"""The main job's stores: reused when built with today's settings, rebuilt (and said so) when not."""

from pipeline.build import build_store
from pipeline.config import PreprocessConfig


def test_the_main_job_rebuilds_only_stores_of_other_settings(tiny_store, tmp_path, capsys):
    from flows.main import _built_otherwise

    _, source = tiny_store
    same, other = tmp_path / "same.zarr", tmp_path / "other.zarr"
    build_store(PreprocessConfig(source=str(source), split="train"), same)
    build_store(PreprocessConfig(source=str(source), split="train", size=64), other)
    assert not _built_otherwise(source, "train", same)
    assert not _built_otherwise(source, "train", tmp_path / "new.zarr")
    assert _built_otherwise(source, "train", other)
    assert "rebuilding" in capsys.readouterr().out
