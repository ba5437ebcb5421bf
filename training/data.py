"""The training loader: batches of (L, bins, label) from the Zarr store, prefetched in a background thread.

Deterministic: epoch e visits the training indices in the order of a permutation drawn from (seed, e), and
batch b flips (horizontally, L and bins together) the images chosen by a generator seeded with
(seed, e, b) -- so a resumed run continues with exactly the batches the uninterrupted one would have seen.
Under DDP each rank takes every world_size-th batch. Stores up to `cache_bytes` are read into memory once;
larger ones are read per batch (sorted indices, one zarr read per array) while the model trains.
"""

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.store import StoreError, open_store

_GOLDEN = 2654435761  # Knuth's multiplicative hash: a fixed, spread-out holdout choice


def holdout_mask(n: int, fraction: float) -> np.ndarray:
    """bool (n,): the images held out for evaluation (the same for every run on the store)."""
    h = (np.arange(n, dtype=np.uint64) * np.uint64(_GOLDEN)) % np.uint64(1 << 32)
    return h < np.uint64(int(fraction * (1 << 32)))


@dataclass(frozen=True)
class DataConfig:
    store: str
    batch_size: int = 64
    size: int = 0  # train at this size (a multiple of 32); 0 = the store's S
    holdout: float = 0.0  # fraction of the store held out for evaluation
    flip: bool = True
    seed: int = 0
    prefetch: int = 3
    cache_bytes: int = 2 << 30

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.size and self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (the encoder halves it 5 times), got {self.size}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")


class StoreData:
    """The arrays of a finished store, and the train / holdout split."""

    def __init__(self, path: str, holdout: float = 0.0, cache_bytes: int = 2 << 30):
        self.group = open_store(path)
        self.S = int(self.group.attrs["S"])
        self.n = int(self.group.attrs["n_images"])
        if self.n == 0:
            raise StoreError(f"{path} holds no images")
        for name in ("L", "bins", "label", "weights", "prior"):
            if name not in self.group:
                raise StoreError(f"{path} lacks the array {name!r}")
        self.weights = np.asarray(self.group["weights"][:], dtype=np.float32)
        self.prior = np.asarray(self.group["prior"][:], dtype=np.float64)
        self.n_classes = len(self.group.attrs.get("classes", [])) or 1000
        mask = holdout_mask(self.n, holdout)
        self.train_idx = np.flatnonzero(~mask)
        self.eval_idx = np.flatnonzero(mask)
        self._cache = None
        if self.n * self.S * self.S * 1.2 <= cache_bytes:
            try:
                self._cache = {k: np.asarray(self.group[k][:]) for k in ("L", "bins", "label")}
            except Exception as e:  # noqa: BLE001 - a damaged shard is reported by name
                raise StoreError(f"{path}: cannot read the arrays: {type(e).__name__}: {e}") from e

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(L uint8 (B, S, S), bins int16 (B, S/4, S/4), label int16 (B,)) of the indices, in their order."""
        if self._cache is not None:
            return self._cache["L"][idx], self._cache["bins"][idx], self._cache["label"][idx]
        order = np.argsort(idx)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(idx))
        s = idx[order]
        try:
            arrays = [np.asarray(self.group[k].oindex[s])[inv] for k in ("L", "bins", "label")]
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot read images {s[:3].tolist()}...: {type(e).__name__}: {e}") from e
        return arrays[0], arrays[1], arrays[2]


def to_batch(L: np.ndarray, q: np.ndarray, label: np.ndarray, size: int, flip: np.ndarray | None) -> dict:
    """Tensors of a batch: L float (B, 1, size, size) in [0, 1], q long (B, size/4, size/4), label long (B,)."""
    L_t = torch.from_numpy(L).unsqueeze(1).float().div_(255.0)  # (B, 1, S, S)
    q_t = torch.from_numpy(q.astype(np.int64))  # (B, S/4, S/4)
    if flip is not None and flip.any():
        f = torch.from_numpy(flip)
        L_t[f] = L_t[f].flip(-1)
        q_t[f] = q_t[f].flip(-1)
    if size and size != L.shape[-1]:
        L_t = F.interpolate(L_t, size=(size, size), mode="area")
        q_t = F.interpolate(q_t[:, None].float(), size=(size // 4, size // 4), mode="nearest")[:, 0].long()
    return {"L": L_t, "q": q_t, "label": torch.from_numpy(label.astype(np.int64))}


class Loader:
    """Batches of one epoch from batch `start`, produced by a background thread `prefetch` batches ahead."""

    def __init__(self, data: StoreData, cfg: DataConfig, rank: int = 0, world: int = 1, pin: bool = False):
        self.data, self.cfg, self.rank, self.world, self.pin = data, cfg, rank, world, pin

    def batches_per_epoch(self) -> int:
        return len(self.data.train_idx) // (self.cfg.batch_size * self.world) or 1

    def plan(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The indices and flips of batch `batch` of epoch `epoch` for this rank."""
        idx = self.data.train_idx
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(idx))
        b = self.cfg.batch_size
        k = batch * self.world + self.rank
        take = perm[(k * b) % len(idx) : (k * b) % len(idx) + b]
        if len(take) < b:  # a store smaller than one batch: wrap around
            take = np.resize(perm, b) if len(perm) < b else np.concatenate([take, perm[: b - len(take)]])
        flips = np.random.default_rng([self.cfg.seed, epoch, batch, 1]).random(b) < 0.5
        return idx[take], flips if self.cfg.flip else np.zeros(b, bool)

    def epoch(self, epoch: int, start: int = 0):
        """Yield the batches start.. of `epoch`."""
        n = self.batches_per_epoch()
        q: queue.Queue = queue.Queue(maxsize=max(1, self.cfg.prefetch))
        stop = threading.Event()

        def produce():
            try:
                for b in range(start, n):
                    if stop.is_set():
                        return
                    idx, flips = self.plan(epoch, b)
                    batch = to_batch(*self.data.read(idx), self.cfg.size, flips)
                    if self.pin:
                        batch = {k: v.pin_memory() for k, v in batch.items()}
                    q.put((b, batch))
                q.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
                q.put(e)

        thread = threading.Thread(target=produce, daemon=True, name="loader")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue, so that it ends
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
