"""The stores a training run reads, each opened once: one reader per store, shared by the loader, the validation and
the final evaluation; and the embedded default's stores, built when they are missing."""

from pathlib import Path

from pipeline.store.reader import ShardReader
from training.config import EMBEDDED, ROOT, TrainConfig


class Stores:
    """--store and --eval-store of a run, each opened on first use and kept (a store in a bucket is opened with
    the run's storage options, --store with its shard cache)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self._readers: dict[str, ShardReader] = {}

    def reader(self, text: str) -> ShardReader:
        if text not in self._readers:
            cache = shard_cache(self.cfg) if text == self.cfg.store else None
            self._readers[text] = ShardReader(self.cfg.place(text), shard_cache=cache)
        return self._readers[text]

    @property
    def train(self) -> ShardReader:
        return self.reader(self.cfg.store)

    @property
    def eval(self) -> ShardReader | None:
        """--eval-store's reader, or None (the run then evaluates on --store's held-out images)."""
        return self.reader(self.cfg.eval_store) if self.cfg.eval_store else None


def shard_cache(cfg: TrainConfig):
    """The local cache of a store in an object store (`--cache-dir`), or None."""
    if not cfg.cache_dir:
        return None
    from pipeline.common.settings import parse_bytes
    from pipeline.store.cache import ShardCache

    return ShardCache(cfg.cache_dir, parse_bytes(cfg.cache_limit), cfg.store)


def ensure_embedded_stores() -> None:
    """Build the embedded default's stores when they are missing (in this process, no Prefect)."""
    from pipeline.build import build_store
    from pipeline.config import PreprocessConfig
    from pipeline.embedded import build_embedded_dataset

    source = build_embedded_dataset(ROOT / "data" / "embedded")
    for split, key in (("train", "store"), ("val", "eval_store")):
        if not (Path(EMBEDDED[key]) / "zarr.json").is_file():
            build_store(PreprocessConfig(source=str(source), split=split), EMBEDDED[key])
