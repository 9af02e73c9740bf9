"""Which examples a training step sees: per-step keys, epoch shuffling and the per-process split.

Every dataset routes its batch order through this module, so that three promises hold for all of
them:

* The global batch of step t depends only on (data, seed, t, batch_size): a run resumed at
    ``start_step=t`` sees exactly the batches an uninterrupted run would.
* Process p of P gets rows ``[p * B / P, (p + 1) * B / P)`` of the global batch of B rows, so
    the concatenation over processes (in process order) is the single-process global batch and
    the data a run sees does not depend on how many hosts it runs on.
* Training and evaluation draw from independent random streams.

Two kinds of sources:

* *Sampled* sets (toys, sphere3d) have a sampler ``draw(key, n) -> (n, *shape)``; the global
    batch of step t is ``draw(step_key(seed, TRAIN_STREAM, t), B)`` (fresh i.i.d. examples).
* *Finite* sets (digits, later tfds sets held in memory) are read epoch by epoch: epoch e is a
    permutation of the N examples keyed by (seed, e); the epochs are concatenated and the global
    batch of step t is rows ``[t * B, (t + 1) * B)`` of that sequence (a batch may straddle an
    epoch boundary; B may even exceed N).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import numpy as np

# Random-stream identifiers folded into the seed's key. Distinct streams give independent draws.
TRAIN_STREAM = 0
TEST_STREAM = 1
TRAIN_EVAL_STREAM = 2  # eval_examples(split="train") of sampled sets: not the training batches
SHUFFLE_STREAM = 3  # epoch permutations of finite sets
VALIDATION_STREAM = 4  # eval_examples(split="validation") of sampled sets
_EVAL_STREAMS = {"test": TEST_STREAM, "train": TRAIN_EVAL_STREAM, "validation": VALIDATION_STREAM}

Sampler = Callable[[jax.Array, int], jax.Array]


def step_key(seed: int, stream: int, step: int) -> jax.Array:
    """The key of draw number `step` of random stream `stream` under `seed` (a typed PRNG key)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), step)


def process_slice(batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows of the global batch that process `process_index` of `process_count` receives."""
    per_process = batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


@functools.lru_cache(maxsize=16)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of the examples in epoch `epoch`: int64 (num_examples,), read-only."""
    key = step_key(seed, SHUFFLE_STREAM, epoch)
    permutation = np.asarray(jax.random.permutation(key, num_examples), dtype=np.int64)
    permutation.setflags(write=False)
    return permutation


def shuffled_rows(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """Example indices of the global batch of `step`: int64 (batch_size,).

    Rows ``[step * batch_size, (step + 1) * batch_size)`` of the concatenated epoch permutations.
    """
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    rows = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        in_epoch = epochs == epoch
        rows[in_epoch] = epoch_permutation(seed, int(epoch), num_examples)[offsets[in_epoch]]
    return rows


def sampled_train_batches(draw: Sampler, *, batch_size: int, seed: int, start_step: int,
                          process_index: int, process_count: int) -> Iterator[np.ndarray]:
    """Infinite batches of fresh draws: float32 (batch_size // process_count, *shape) each.

    The global batch is drawn whole and sliced, so the union over processes is the global batch.
    """
    rows = process_slice(batch_size, process_index, process_count)
    step = start_step
    while True:
        batch = draw(step_key(seed, TRAIN_STREAM, step), batch_size)
        yield np.asarray(batch[rows], dtype=np.float32)
        step += 1


def sampled_eval_examples(draw: Sampler, *, split: str, num_examples: int,
                          seed: int) -> np.ndarray:
    """`num_examples` draws from the evaluation stream of `split`: float32 (num_examples, ...).

    split: 'train', 'validation' or 'test' (three streams independent of each other and of the
    training batches)."""
    stream = _EVAL_STREAMS[split]
    return np.asarray(draw(step_key(seed, stream, 0), num_examples), dtype=np.float32)


def finite_train_batches(examples: np.ndarray, *, batch_size: int, seed: int, start_step: int,
                         process_index: int, process_count: int) -> Iterator[np.ndarray]:
    """Infinite epoch-shuffled batches of `examples` (N, *shape), sliced for this process."""
    rows = process_slice(batch_size, process_index, process_count)
    step = start_step
    while True:
        indices = shuffled_rows(seed, step, batch_size, examples.shape[0])[rows]
        yield np.asarray(examples[indices], dtype=np.float32)
        step += 1


def finite_eval_examples(examples: np.ndarray, *, num_examples: int, seed: int) -> np.ndarray:
    """A seed-determined subset of `num_examples` of `examples`, in a seed-determined order.

    The caller checks that num_examples <= len(examples).
    """
    key = step_key(seed, TEST_STREAM, 0)
    order = np.asarray(jax.random.permutation(key, examples.shape[0]))[:num_examples]
    return np.asarray(examples[order], dtype=np.float32)
