"""The order in which an epoch visits the training images, and how it is cut into batches and ranks.

Both orders are functions of (seed, epoch) only, so a resumed run, any thread count and every DDP rank agree:
- `random`: a uniform permutation of all training images per epoch;
- `quasi`: the shards in a random order, cut into windows of `window` shards, and the images of each window
  in a random order (FFCV's QUASI_RANDOM idea). Every shard is read in one go once per epoch; the price is that
  two images of one window tend to share batches, which a uniform permutation never favours (docs/training.md).
An epoch of T images is cut into ceil(T / B) batches of B images or slightly fewer (`batch_span`): every image
once, none dropped, none repeated. B is the batch of one step over all ranks, and each of w ranks takes an
even share of it (`rank_span`). The flips of a batch come from (seed, epoch, batch). Nothing in the order or the
batches depends on w, so a run checkpointed at step s on w ranks resumes on any other number of ranks with
exactly the images of that epoch not yet seen, then the same epochs after it (MosaicML streaming's idea).
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


def epoch_batches(n: int, batch_size: int) -> int:
    """Batches of an epoch of n images at (at most) batch_size images each."""
    return max(1, -(-n // batch_size))


def batch_span(n: int, batch_size: int, batch: int) -> tuple[int, int]:
    """[lo, hi): the positions in the epoch's sequence of batch `batch` (sizes differ by at most one)."""
    steps = epoch_batches(n, batch_size)
    return batch * n // steps, (batch + 1) * n // steps


def rank_span(lo: int, hi: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank `rank`'s share of the batch [lo, hi) over `world` ranks."""
    return lo + (hi - lo) * rank // world, lo + (hi - lo) * (rank + 1) // world


def batch_flips(seed: int, epoch: int, batch: int, batch_size: int) -> np.ndarray:
    """bool (batch_size,): the images of a batch flipped horizontally (L and targets together)."""
    return np.random.default_rng([seed, epoch, batch, 1]).random(batch_size) < 0.5
