"""The order in which an epoch visits the training images, and how it is cut into batches and ranks.

Both orders are functions of (seed, epoch) only, so a resumed run, any thread count and every DDP rank agree:
- `random`: a uniform permutation of all training images per epoch;
- `quasi`: the shards in a random order, cut into windows of `window` shards, and the images of each window
  in a random order (FFCV's QUASI_RANDOM idea). Every shard is read in one go once per epoch; the price is that
  two images of one window tend to share batches, which a uniform permutation never favours (docs/training.md).
Global batch j holds positions j * B ... j * B + B - 1 of the epoch's sequence; rank r of w takes global batches
r, r + w, r + 2w, ...; the flips of a batch come from (seed, epoch, batch).
"""

import numpy as np


def _random(train_idx: np.ndarray, seed: int, epoch: int, shards: np.ndarray, window: int) -> np.ndarray:
    return train_idx[np.random.default_rng([seed, epoch]).permutation(len(train_idx))]


def _quasi(train_idx: np.ndarray, seed: int, epoch: int, shards: np.ndarray, window: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch, 2])
    shard = shards  # train_idx is sorted, so each shard's images are one run
    starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if len(train_idx) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(train_idx)]
    shards = rng.permutation(len(starts))
    pieces = []
    for w in range(0, len(shards), window):
        members = np.concatenate([np.arange(starts[s], ends[s]) for s in shards[w : w + window]])
        pieces.append(members[rng.permutation(len(members))])
    return train_idx[np.concatenate(pieces)] if pieces else train_idx[:0]


ORDERS = {"random": _random, "quasi": _quasi}  # the orders there are; `DataConfig` checks a run's against it


def epoch_sequence(train_idx: np.ndarray, order: str, seed: int, epoch: int, shards: np.ndarray, window: int):
    """int64 (len(train_idx),): the store indices of the training images in the order epoch `epoch` visits them.
    shards: the shard each of train_idx lies in (`ShardReader.shard_of`)."""
    return ORDERS[order](train_idx, seed, epoch, shards, window)


def batch_positions(n: int, batch_size: int, global_batch: int) -> np.ndarray:
    """Positions in the epoch's sequence of global batch `global_batch` (wrapping around the end)."""
    lo = (global_batch * batch_size) % n
    take = np.arange(lo, min(lo + batch_size, n))
    if len(take) < batch_size:  # a store smaller than one batch, or the last one: wrap around
        take = np.resize(np.arange(n), batch_size) if n < batch_size else np.r_[take, np.arange(batch_size - len(take))]
    return take


def batch_flips(seed: int, epoch: int, batch: int, batch_size: int) -> np.ndarray:
    """bool (batch_size,): the images of a batch flipped horizontally (L and targets together)."""
    return np.random.default_rng([seed, epoch, batch, 1]).random(batch_size) < 0.5
