"""The training loader: batches of (L, bins, label) decoded from the store by a pool of threads.

Batch b of epoch e holds the images `training.order` assigns it and flips (L and targets together) the ones
drawn from (seed, e, b), so a resumed run continues with exactly the batches the uninterrupted one would have
seen, whatever the thread count. Stores up to `cache_bytes` are decoded into memory once; larger ones are read
per batch straight from the shard files (`pipeline.store.reader`) while the model trains. The threads spend their time
in the L codec's Numba kernel, which releases the GIL. Batches stay uint8 / int16 on the host; `device_batch`
converts them on the device (a quarter of the bytes to copy).
"""

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.common.cli import Refused
from pipeline.common.settings import setting
from pipeline.store.format import StoreError
from pipeline.store.reader import reader_of
from training.models.registry import N_CLASSES
from training.order import ORDERS, batch_flips, batch_span, epoch_batches, epoch_sequence, rank_span

_GOLDEN = 2654435761  # Knuth's multiplicative hash: a fixed, spread-out holdout choice


def holdout_mask(n: int, fraction: float) -> np.ndarray:
    """bool (n,): the images held out for evaluation (the same for every run on the store)."""
    h = (np.arange(n, dtype=np.uint64) * np.uint64(_GOLDEN)) % np.uint64(1 << 32)
    return h < np.uint64(int(fraction * (1 << 32)))


def default_threads(local_world: int = 1) -> int:
    """Loader threads when not given: the cores this process may use, less one for the training loop itself."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, local_world) - 1)


@dataclass(frozen=True)
class DataConfig:
    """The loader's settings; `TrainConfig` inherits them, so that each is declared once."""

    batch_size: int = setting(64, "images per step over all ranks (each rank takes an even share)")
    seed: int = setting(0, "seed of the weights, the order and the flips")
    order: str = setting("random", "the loader's order: random or quasi (training.order)")
    window: int = setting(32, "quasi order: shards shuffled together")
    loader_threads: int = setting(0, "decoding threads (0 = the cores this process may use, less one)")
    flip: bool = setting(True, "flip half the images of each batch horizontally, L and targets together")
    prefetch: int = setting(2, "batches kept ready beyond the ones being decoded")

    def __post_init__(self):
        if self.order not in ORDERS:
            raise Refused(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        for name, low in (("batch_size", 1), ("window", 1), ("loader_threads", 0), ("prefetch", 0)):
            if not getattr(self, name) >= low:
                raise Refused(f"{name} must be >= {low}, got {getattr(self, name)}")


class StoreData:
    """The arrays of a finished store, and the train / holdout split."""

    def __init__(self, store, holdout: float = 0.0, cache_bytes: int = 2 << 30, threads: int = 0,
                 shard_cache=None):  # fmt: skip
        """store: the store's `ShardReader` (opened once, shared with the run's evaluation), or its path or URL."""
        self.reader = reader_of(store, shard_cache)
        self.group = self.reader.group
        path = self.reader.path
        self.S = int(self.group.attrs["S"])
        self.n = self.reader.n
        if self.n == 0:
            raise StoreError(f"{path} holds no images")
        for name in ("L", "bins", "label", "weights", "prior"):
            if name not in self.group:
                raise StoreError(f"{path} lacks the array {name!r}")
        self.weights = np.asarray(self.group["weights"][:], dtype=np.float32)
        self.prior = np.asarray(self.group["prior"][:], dtype=np.float64)
        self.n_classes = max(N_CLASSES, len(self.group.attrs.get("classes", [])))  # the classifier's outputs
        mask = holdout_mask(self.n, holdout)
        self.train_idx = np.flatnonzero(~mask)
        self.eval_idx = np.flatnonzero(mask)
        self.arrays: dict[str, np.ndarray] | None = None
        if self.n * self.S * self.S * 1.2 <= cache_bytes:
            self.arrays = self._read_all(threads or default_threads())

    @property
    def in_memory(self) -> bool:
        return self.arrays is not None

    def _read_all(self, threads: int) -> dict[str, np.ndarray]:
        """Every image, decoded into memory by `threads` threads, 16 shards per task."""
        out = self.reader.empty(self.n)
        step = 16 * self.reader.shard_images

        def load(lo: int) -> None:
            idx = np.arange(lo, min(lo + step, self.n))
            self.reader.decode(self.reader.fetch(idx), np.arange(len(idx)), out, at=lo)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(load, range(0, self.n, step)))
        return out

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(L uint8 (B, S, S), bins int16 (B, S/4, S/4), label int16 (B,)) of the indices, in their order."""
        arrays = {k: v[idx] for k, v in self.arrays.items()} if self.arrays is not None else self.reader.read(idx)
        return arrays["L"], arrays["bins"], arrays["label"]


class Loader:
    """Batches of one epoch from batch `start`, decoded `threads` at a time, `prefetch` more kept ready.

    A batch is {"L": uint8 (B, S, S), "q": int16 (B, S/4, S/4), "label": int16 (B,), "flip": bool (B,),
    "index": int64 (B,)} on the host, in pinned memory with `pin`; `device_batch` applies the flips. In the quasi
    order, the images of a window's batches are read in one fetch per window.
    """

    def __init__(self, data: StoreData, cfg: DataConfig, rank: int = 0, world: int = 1, pin: bool = False):
        self.data, self.cfg, self.rank, self.world, self.pin = data, cfg, rank, world, pin
        self.threads = cfg.loader_threads or default_threads(int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        self._sequence: tuple[int, np.ndarray] | None = None

    def batches_per_epoch(self) -> int:
        """The same for any number of ranks (`training.order`)."""
        return epoch_batches(len(self.data.train_idx), self.cfg.batch_size)

    def global_size(self, batch: int) -> int:
        """Images in batch `batch` over all ranks."""
        lo, hi = batch_span(len(self.data.train_idx), self.cfg.batch_size, batch)
        return hi - lo

    def sequence(self, epoch: int) -> np.ndarray:
        """The store indices of the epoch in visiting order (`training.order`), kept for the epoch under way."""
        if self._sequence is None or self._sequence[0] != epoch:
            c = self.cfg
            shards = self.data.reader.shard_of(self.data.train_idx)
            seq = epoch_sequence(self.data.train_idx, c.order, c.seed, epoch, shards, c.window)
            self._sequence = (epoch, seq)
        return self._sequence[1]

    def plan(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The store indices and flips of this rank's share of batch `batch` of epoch `epoch`."""
        seq = self.sequence(epoch)
        lo, hi = batch_span(len(seq), self.cfg.batch_size, batch)
        a, b = rank_span(lo, hi, self.rank, self.world)
        flips = batch_flips(self.cfg.seed, epoch, batch, hi - lo)[a - lo : b - lo] if self.cfg.flip else None
        return seq[a:b], flips if flips is not None else np.zeros(b - a, bool)

    def _group_batches(self) -> int:
        """Batches per fetch: a window's worth in the quasi order, one in the random order or from memory."""
        if self.cfg.order != "quasi" or self.data.in_memory:
            return 1
        return max(1, self.cfg.window * self.data.reader.shard_images // self.cfg.batch_size)

    def epoch(self, epoch: int, start: int = 0):
        """Yield (batch number, batch) for the batches start.. of `epoch`, in order."""
        n, per_group = self.batches_per_epoch(), self._group_batches()
        fetches: dict[int, object] = {}
        pending: deque = deque()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="loader")

        def fetch(g: int):  # submitted before any batch that waits on it: the pool's FIFO queue cannot deadlock
            if g not in fetches and g * per_group < n:
                lo, hi = max(g * per_group, start), min((g + 1) * per_group, n)
                idx = np.unique(np.concatenate([self.plan(epoch, k)[0] for k in range(lo, hi)]))
                fetches[g] = pool.submit(self.data.reader.fetch_shards, idx)
            return fetches.get(g)

        def submit(b: int) -> None:
            idx, flips = self.plan(epoch, b)
            fetched = None
            if per_group > 1:
                fetched = fetch(b // per_group)
                fetch(b // per_group + 1)  # the next window is read while this one decodes
                fetches.pop(b // per_group - 1, None)
            pending.append((b, pool.submit(self._make, idx, flips, fetched)))

        try:
            b = start
            while b < n or pending:
                while b < n and len(pending) < self.threads + self.cfg.prefetch:
                    submit(b)
                    b += 1
                k, future = pending.popleft()
                yield k, future.result()
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _make(self, idx: np.ndarray, flips: np.ndarray, fetched) -> dict[str, torch.Tensor]:
        """Decode one batch into new (pinned) buffers; its flips are applied on the device (`device_batch`)."""
        reader = self.data.reader
        tensors = {
            name: torch.empty((len(idx), *lay.tail), dtype=_TORCH[lay.dtype.name], pin_memory=self.pin)
            for name, lay in reader.layouts.items()
        }
        out = {name: t.numpy() for name, t in tensors.items()}
        if self.data.in_memory:
            for name, arr in self.data.arrays.items():
                np.take(arr, idx, axis=0, out=out[name])
        elif fetched is not None:
            got = fetched.result()
            reader.decode(got, np.searchsorted(got.idx, idx), out)
        else:
            reader.decode(reader.fetch(idx), np.arange(len(idx)), out)
        flip = torch.from_numpy(flips).pin_memory() if self.pin else torch.from_numpy(flips)
        out = {"L": tensors["L"], "q": tensors["bins"], "label": tensors["label"], "flip": flip}
        return out | {"index": torch.from_numpy(np.asarray(idx, np.int64))}  # the store's images, for audits


_TORCH = {"uint8": torch.uint8, "int16": torch.int16}


def device_batch(batch: dict, device: torch.device, size: int = 0, channels_last: bool = False, crop: int = 0) -> dict:
    """A host batch on `device` for the model: L float (B, 1, side, side) in [0, 1], q and label int64.

    The batch's flips are applied here, to L and the targets together: free on a GPU, and the loader's threads
    keep to decoding. size: resize to this (area for L, nearest for the targets), 0 = keep the store's; crop:
    then centre-crop to this side (a multiple of 4), each target block's category read at its centre pixel.
    """
    L = batch["L"].to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)  # (B, 1, S, S)
    q = batch["q"].to(device, non_blocking=True).long()  # (B, S/4, S/4)
    label = batch["label"].to(device, non_blocking=True).long()
    flip = batch["flip"].to(device, non_blocking=True)
    L = torch.where(flip[:, None, None, None], L.flip(-1), L)
    q = torch.where(flip[:, None, None], q.flip(-1), q)
    side = size or L.shape[-1]
    if crop and crop < side:
        off = (side - crop) // 2
        pixels = q.repeat_interleave(4, -1).repeat_interleave(4, -2)  # each block's category on its 16 pixels
        if side != pixels.shape[-1]:
            pixels = F.interpolate(pixels[:, None].float(), size=(side, side), mode="nearest")[:, 0].long()
        q = pixels[:, off + 2 : off + crop : 4, off + 2 : off + crop : 4]
        L = F.interpolate(L, size=(side, side), mode="area") if side != L.shape[-1] else L
        L = L[..., off : off + crop, off : off + crop]
    elif side != L.shape[-1]:
        L = F.interpolate(L, size=(side, side), mode="area")
        q = F.interpolate(q[:, None].float(), size=(side // 4, side // 4), mode="nearest")[:, 0].long()
    if channels_last:
        L = L.contiguous(memory_format=torch.channels_last)
    out = {"L": L, "q": q, "label": label}
    return out | ({"index": batch["index"]} if "index" in batch else {})


def on_device(batches, device: torch.device, size: int = 0, channels_last: bool = False, crop: int = 0):
    """Yield (b, device batch) with the next batch's copy already issued: on CUDA, on a side stream that the
    step's stream waits for, so the copy overlaps the previous step; elsewhere, converted in turn."""
    if device.type != "cuda":
        for b, batch in batches:
            yield b, device_batch(batch, device, size, channels_last, crop)
        return
    stream = torch.cuda.Stream(device)
    ready = None
    for b, batch in batches:
        with torch.cuda.stream(stream):
            moved = device_batch(batch, device, size, channels_last, crop)
        if ready is not None:
            yield ready
        torch.cuda.current_stream(device).wait_stream(stream)
        for t in moved.values():
            t.record_stream(torch.cuda.current_stream(device))
        ready = (b, moved)
    if ready is not None:
        yield ready
