"""`--l-codec zstd`: a store whose every array uses codecs of the Zarr v3 specification only, so that readers
other than zarr-python with this package (tensorstore here) read L; the project reads it as it reads the default."""

import json

import numpy as np
import pytest

from pipeline import check
from pipeline.store.reader import ShardReader
from tests.conftest import make_store

SPEC_CODECS = {"sharding_indexed", "bytes", "zstd", "crc32c"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same photos in a default store and a --l-codec zstd one."""
    return {codec: make_store(tmp_path_factory.mktemp(codec), l_codec=codec)[0] for codec in ("med_rans", "zstd")}


def _codec_names(array_dir) -> set[str]:
    meta = json.loads((array_dir / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]
    return {meta["codecs"][0]["name"]} | {c["name"] for c in inner["codecs"] + inner["index_codecs"]}


def test_a_zstd_store_uses_only_the_specifications_codecs(stores):
    for name in ("L", "bins", "label"):
        assert _codec_names(stores["zstd"] / name) <= SPEC_CODECS, name
    assert "colorize.med_rans" in _codec_names(stores["med_rans"] / "L")


def test_tensorstore_reads_what_the_project_reads(stores):
    ts = pytest.importorskip("tensorstore", reason="tensorstore is a test dependency ([dev])")

    def open_ts(store, name):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / name)}}
        return ts.open(spec, read=True).result()

    ours = ShardReader(stores["zstd"]).read(np.arange(ShardReader(stores["zstd"]).n))
    for name in ("L", "bins", "label"):
        theirs = open_ts(stores["zstd"], name).read().result()
        assert theirs.dtype == ours[name].dtype and np.array_equal(theirs, ours[name]), name
    default = ShardReader(stores["med_rans"]).read(np.arange(len(ours["L"])))
    assert np.array_equal(default["L"], ours["L"])  # both codecs are lossless: the same L
    assert ShardReader(stores["zstd"]).layouts["L"].codecs.chain == (
        "bytes",
        "zstd",
        "crc32c",
    )  # the reader's own path, not zarr-python's
    with pytest.raises(ValueError, match="codec"):  # why the option exists: L of the default store is ours alone
        open_ts(stores["med_rans"], "L")


def test_the_quality_check_and_training_read_a_zstd_store(stores, tmp_path):
    from training.run import TrainConfig, train

    assert check.main([str(stores["zstd"]), "--out", str(tmp_path)]) == 0
    cfg = TrainConfig(store=str(stores["zstd"]), out=str(tmp_path / "run"), width=1 / 8, size=64, batch_size=4,
                      steps=2, holdout=0.25, eval_images=4)  # fmt: skip
    assert train(cfg)["step"] == 2
