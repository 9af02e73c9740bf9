"""Tests for kale_jax.data.batching: epoch order, process slices and random streams."""
import jax
import numpy as np
import pytest

from kale_jax.data import batching


@pytest.mark.parametrize("batch_size,num_examples", [(7, 20), (20, 20), (45, 20)])
def test_shuffled_rows_concatenate_epoch_permutations(batch_size, num_examples):
    """Steps 0..T-1 read the concatenated epoch permutations in order, across epoch boundaries
    and with batches larger than an epoch."""
    num_steps = 9
    rows = np.concatenate([batching.shuffled_rows(5, t, batch_size, num_examples)
                           for t in range(num_steps)])
    num_epochs = -(-num_steps * batch_size // num_examples)
    expected = np.concatenate([batching.epoch_permutation(5, e, num_examples)
                               for e in range(num_epochs)])
    np.testing.assert_array_equal(rows, expected[:num_steps * batch_size])
    # Each epoch is a permutation, and consecutive epochs are shuffled differently.
    for e in range(num_epochs):
        assert np.array_equal(np.sort(expected[e * num_examples:(e + 1) * num_examples]),
                              np.arange(num_examples))
    assert not np.array_equal(expected[:num_examples], expected[num_examples:2 * num_examples])


def test_epoch_permutation_depends_on_seed_and_is_read_only():
    first = batching.epoch_permutation(0, 0, 50)
    assert not np.array_equal(first, batching.epoch_permutation(1, 0, 50))
    np.testing.assert_array_equal(first, batching.epoch_permutation(0, 0, 50))
    with pytest.raises(ValueError):
        first[0] = 3


@pytest.mark.parametrize("batch_size,process_count", [(8, 1), (8, 2), (12, 4)])
def test_process_slices_tile_the_global_batch(batch_size, process_count):
    rows = np.arange(batch_size)
    pieces = [rows[batching.process_slice(batch_size, p, process_count)]
              for p in range(process_count)]
    assert all(len(piece) == batch_size // process_count for piece in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), rows)


def test_streams_and_steps_give_distinct_keys():
    keys = [batching.step_key(seed, stream, step)
            for seed in (0, 1) for stream in (batching.TRAIN_STREAM, batching.TEST_STREAM,
                                              batching.TRAIN_EVAL_STREAM, batching.SHUFFLE_STREAM)
            for step in (0, 1)]
    raw = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    assert len(raw) == len(keys)


def test_finite_batches_resume_and_split():
    examples = np.arange(30, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    common = dict(batch_size=8, seed=3)
    full = batching.finite_train_batches(examples, start_step=0, process_index=0,
                                         process_count=1, **common)
    first = [next(full) for _ in range(6)]
    resumed = batching.finite_train_batches(examples, start_step=4, process_index=0,
                                            process_count=1, **common)
    np.testing.assert_array_equal(next(resumed), first[4])
    np.testing.assert_array_equal(next(resumed), first[5])
    pieces = [next(batching.finite_train_batches(examples, start_step=2, process_index=p,
                                                 process_count=4, **common)) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(pieces), first[2])
    np.testing.assert_array_equal(first[1][:, 0],
                                  batching.shuffled_rows(3, 1, 8, 30).astype(np.float32))


def test_finite_eval_examples_is_a_seeded_subset():
    examples = np.arange(30, dtype=np.float32)[:, None]
    subset = batching.finite_eval_examples(examples, num_examples=10, seed=0)
    assert subset.shape == (10, 1) and len(np.unique(subset)) == 10
    np.testing.assert_array_equal(subset, batching.finite_eval_examples(examples, num_examples=10,
                                                                       seed=0))
    assert not np.array_equal(subset, batching.finite_eval_examples(examples, num_examples=10,
                                                                    seed=1))
