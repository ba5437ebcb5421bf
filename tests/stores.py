"""Helpers of the tests that build small stores and check what a run touched."""

from pipeline.config import PreprocessConfig


def small_cfg(source, **kw) -> PreprocessConfig:
    """Settings of a small, quick store of `source` (32 x 32, shards of 4), with `kw` over them."""
    return PreprocessConfig(**({"source": str(source), "size": 32, "grayscale": "include", "shard_images": 4} | kw))


def snapshot(folder) -> dict:
    """Every path below a local folder, with each file's bytes: equal before and after means nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def killed_build(source, store, **kw) -> PreprocessConfig:
    """Build `store` in parts of 4 images, killed (KeyboardInterrupt) once the first part is staged: its settings."""
    import pytest

    from pipeline.build import build_store

    settings = small_cfg(source, part_images=4, **kw)

    def stop(done, total):
        raise KeyboardInterrupt  # as a kill between parts

    with pytest.raises(KeyboardInterrupt):
        build_store(settings, store, progress=stop)
    return settings
