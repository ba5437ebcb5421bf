"""The store's format, its writer and its reader, side by side (docs/store.md is the reference).

- `format`: what a finished store is, how a run begins and ends (`begin`, `finalize`), `open_store`;
- the writer: `chunks` (each image's encoded chunks and whole shard files), `codec` (L's lossless codec, a
  zarr codec), `staging` (a run's staged parts), `shards` (the shard files, written whole);
- the reader: `reader` (images by index, straight from the shard files).
"""

from pipeline.store.format import StoreError, open_store

__all__ = ["StoreError", "open_store"]
