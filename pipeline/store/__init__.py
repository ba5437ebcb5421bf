"""The store's format, its writer and its reader, side by side (docs/store.md is the reference).

- `format`: what a finished store is, its names, `open_store`; `lifecycle`: how a run begins (what it may
  touch, what it resumes) and ends (`finalize`, `complete: true` written last);
- the writer: `chunks` (each image's encoded chunks and whole shard files), `codec` (L's lossless codec, a
  zarr codec), `staging` (a run's staged parts), `shards` (the per-slot arrays, each shard written whole);
- the reader: `reader` (images by index), over `shardfiles` (local shard files) or `remote` (shards in an
  object store), with `cache` (whole shards from a bucket on local disk).
"""

from pipeline.store.format import StoreError, open_store

__all__ = ["StoreError", "open_store"]
