"""What a run may touch: `--overwrite` replaces this project's stores only, never a folder holding anything else,
the source or a folder above it; staged summaries are data, never code."""

import json
import pickle

import pytest

from pipeline.build import build_store
from pipeline.store.format import StoreError, open_store, staging_dir
from pipeline.store.staging import part_path
from tests.stores import killed_build, small_cfg, snapshot


def test_overwrite_refuses_a_folder_that_is_not_a_store(source, tmp_path):
    v = tmp_path / "v"
    (v / "thesis").mkdir(parents=True)
    (v / "notes.txt").write_text("x\n")
    (v / "thesis" / "ch1.tex").write_text("y\n")
    before = snapshot(v)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not a store of this project"):
            build_store(small_cfg(source), v, overwrite=overwrite)
    assert snapshot(v) == before


def test_overwrite_refuses_a_store_that_holds_other_files(source, tmp_path):
    store = tmp_path / "s.zarr"
    build_store(small_cfg(source), store)
    (store / "notes.txt").write_text("mine\n")
    (store / "L" / "extra.npy").write_bytes(b"0")
    before = snapshot(store)
    with pytest.raises(StoreError, match="notes.txt") as refused:
        build_store(small_cfg(source, size=64), store, overwrite=True)
    assert "L/extra.npy" in str(refused.value)
    assert snapshot(store) == before


def test_overwrite_replaces_a_store_of_other_settings(source, tmp_path):
    store = tmp_path / "s.zarr"
    build_store(small_cfg(source), store)
    with pytest.raises(StoreError, match="other settings"):
        build_store(small_cfg(source, size=64), store)
    build_store(small_cfg(source, size=64), store, overwrite=True)
    assert open_store(store).attrs["S"] == 64


@pytest.mark.parametrize("where", ["the source", "above the source", "inside its split"])
def test_the_source_is_never_a_store(source, where):
    store = {"the source": source, "above the source": source.parent, "inside its split": source / "train" / "s"}
    before = snapshot(source)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="source"):
            build_store(small_cfg(source), store[where], overwrite=overwrite)
    assert snapshot(source) == before


def test_a_regular_file_is_no_store(source, tmp_path):
    (tmp_path / "f").write_text("data")
    with pytest.raises(StoreError, match="is a file"):
        build_store(small_cfg(source), tmp_path / "f", overwrite=True)
    assert (tmp_path / "f").read_text() == "data"


class Planted:
    def __reduce__(self):
        return (exec, ("open('PLANTED', 'w').write('ran')",))


def test_staged_summaries_are_read_as_data(source, tmp_path, monkeypatch):
    """A killed run's staging with a planted pickle beside the JSON summaries: the resumed run reads JSON only."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.zarr"
    settings = killed_build(source, store)
    staged = sorted(staging_dir(store).glob("part-*.json"))
    assert staged and all(json.loads(p.read_text())["records"] for p in staged)
    for k in range(4):
        (staging_dir(store) / f"part-{k:06d}.pkl").write_bytes(pickle.dumps(Planted()))
    build_store(settings, store)
    assert not (tmp_path / "PLANTED").exists()
    assert open_store(store).attrs["complete"]


def test_a_damaged_summary_is_named(source, tmp_path):
    store = tmp_path / "s.zarr"
    settings = killed_build(source, store)
    part = next(k for k in range(8) if part_path(store, k).is_file())
    part_path(store, part).write_text('{"names": ["L"]')
    with pytest.raises(StoreError, match=f"staged summary of part {part} is damaged"):
        build_store(settings, store)


def test_a_run_killed_while_it_began_starts_again(source, tmp_path):
    """Killed between making the staging area and its stamp: the folder is still recognised as the run's."""
    store = tmp_path / "s.zarr"
    staging_dir(store).mkdir(parents=True)
    (staging_dir(store) / ".config.json.tmp4242").write_bytes(b'{"dig')
    build_store(small_cfg(source), store)
    assert open_store(store).attrs["complete"]
