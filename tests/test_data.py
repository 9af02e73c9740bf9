"""Tests for the kale_jax.data API: names, shapes, order, resume, process split and errors."""
import itertools

import ml_collections
import numpy as np
import pytest

from kale_jax import data
from kale_jax.data import digits

SHAPES = {"sphere3d": ((3,), "vector"), "ring": ((2,), "vector"), "grid": ((2,), "vector"),
          "curve": ((2,), "vector"), "digits": ((32, 32, 1), "image"),
          "shapes": ((16, 16, 1), "image")}


def config(name, **kwargs):
    return ml_collections.ConfigDict(dict(name=name, data_dir=None, **kwargs))


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def test_registry_names():
    assert data.EMBEDDED_DATASETS == ("sphere3d", "ring", "grid", "curve", "digits", "shapes")
    assert set(data.DATASETS) == set(data.EMBEDDED_DATASETS) | {
        "cifar10", "celeb_a", "downsampled_imagenet/32x32", "lsun/bedroom"} | {
        "redwine", "whitewine", "parkinsons", "hepmass", "miniboone", "gaussian_mixture"}


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
def test_info_and_batch_shapes(name):
    shape, kind = SHAPES[name]
    assert data.get_info(config(name)) == data.DatasetInfo(name, shape, kind)
    batch = next(data.train_batches(config(name), batch_size=16, seed=0))
    assert batch.shape == (16, *shape) and batch.dtype == np.float32
    assert np.all(np.isfinite(batch))
    examples = data.eval_examples(config(name), num_examples=10)
    assert examples.shape == (10, *shape) and examples.dtype == np.float32


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
def test_batches_are_seed_determined_and_resume_exactly(name):
    full = take(data.train_batches(config(name), batch_size=8, seed=1), 5)
    again = take(data.train_batches(config(name), batch_size=8, seed=1), 5)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(full[0], full[1])  # steps differ
    other_seed = next(data.train_batches(config(name), batch_size=8, seed=2))
    assert not np.array_equal(full[0], other_seed)
    resumed = take(data.train_batches(config(name), batch_size=8, seed=1, start_step=3), 2)
    np.testing.assert_array_equal(resumed[0], full[3])
    np.testing.assert_array_equal(resumed[1], full[4])


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
def test_processes_split_the_global_batch(name):
    batch_size, process_count, num_steps = 12, 4, 3
    single = take(data.train_batches(config(name), batch_size=batch_size, seed=0), num_steps)
    per_process = [take(data.train_batches(config(name), batch_size=batch_size, seed=0,
                                           process_index=p, process_count=process_count),
                        num_steps)
                   for p in range(process_count)]
    for step in range(num_steps):
        pieces = [per_process[p][step] for p in range(process_count)]
        assert all(piece.shape[0] == batch_size // process_count for piece in pieces)
        np.testing.assert_array_equal(np.concatenate(pieces), single[step])


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
def test_eval_examples_are_seeded_and_independent_of_training(name):
    test = data.eval_examples(config(name), split="test", num_examples=8)
    np.testing.assert_array_equal(test, data.eval_examples(config(name), split="test",
                                                           num_examples=8))
    assert not np.array_equal(test, data.eval_examples(config(name), split="test",
                                                       num_examples=8, seed=1))
    assert not np.array_equal(test, data.eval_examples(config(name), split="train",
                                                       num_examples=8))
    assert not np.array_equal(test, next(data.train_batches(config(name), batch_size=8, seed=0)))


def test_digits_epochs_visit_every_training_image_once():
    """With B = 128 (not dividing 1500), the first 1500 rows read are the training split once."""
    train = digits.load("train", 8)
    index = {image.tobytes(): i for i, image in enumerate(train)}  # the 1797 digits are distinct
    assert len(index) == len(train)
    batches = take(data.train_batches(config("digits", image_size=8), batch_size=128, seed=0), 12)
    rows = [index[image.tobytes()] for image in np.concatenate(batches)]
    assert sorted(rows[:1500]) == list(range(1500))
    assert len(set(rows[1500:])) == 12 * 128 - 1500  # the next epoch has begun, no repeats yet


def test_digits_eval_examples_come_from_the_split():
    test = digits.load("test", 16)
    examples = data.eval_examples(config("digits", image_size=16), split="test", num_examples=297)
    assert examples.shape == (297, 16, 16, 1)
    assert {e.tobytes() for e in examples} == {t.tobytes() for t in test}


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_digits_image_size(size):
    assert data.get_info(config("digits", image_size=size)).shape == (size, size, 1)
    batch = next(data.train_batches(config("digits", image_size=size), batch_size=4, seed=0))
    assert batch.shape == (4, size, size, 1)
    assert batch.min() >= -1.0 and batch.max() <= 1.0


def test_ring_radius_key_is_used():
    batch = next(data.train_batches(config("ring", radius=5.0, std=0.01), batch_size=64, seed=0))
    # |x| = 5 +- a few std (0.01).
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 5.0, atol=0.06)


def test_unknown_name_lists_datasets():
    for function in (data.get_info,
                     lambda c: data.train_batches(c, batch_size=8, seed=0),
                     lambda c: data.eval_examples(c, num_examples=8)):
        with pytest.raises(ValueError,
                           match=r"data.name='mnist' is not one of "
                                 r".*sphere3d.*ring.*grid.*digits.*shapes"):
            function(config("mnist"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8.0), "batch_size"),
    (dict(batch_size=10, process_count=4), "divisible"),
    (dict(batch_size=8, process_count=2, process_index=2), "process_index"),
    (dict(batch_size=8, process_index=-1), "process_index"),
    (dict(batch_size=8, process_count=0), "process_count"),
    (dict(batch_size=8, start_step=-1), "start_step"),
    (dict(batch_size=8, seed=-3), "seed"),
])
def test_train_batches_rejects_bad_arguments(kwargs, match):
    kwargs.setdefault("seed", 0)
    for name in data.EMBEDDED_DATASETS:
        with pytest.raises(ValueError, match=match):
            data.train_batches(config(name), **kwargs)


@pytest.mark.parametrize("name,kwargs,match", [
    ("ring", dict(split="valid", num_examples=8), "split"),
    ("digits", dict(split="validation", num_examples=8), "split"),
    ("ring", dict(num_examples=0), "num_examples"),
    ("sphere3d", dict(num_examples=8, seed=1.5), "seed"),
    ("digits", dict(split="test", num_examples=298), "297"),
])
def test_eval_examples_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.eval_examples(config(name), **kwargs)


@pytest.mark.parametrize("name,key,value", [
    ("digits", "image_size", 28), ("digits", "image_size", True),
    ("ring", "std", 0.0), ("ring", "radius", -1.0), ("grid", "std", float("inf")),
    ("curve", "noise", -0.1),
])
def test_bad_dataset_keys_are_rejected_by_every_entry_point(name, key, value):
    bad = config(name, **{key: value})
    for function in (data.get_info,
                     lambda c: data.train_batches(c, batch_size=8, seed=0),
                     lambda c: data.eval_examples(c, num_examples=8)):
        with pytest.raises(ValueError, match=f"data.{key}"):
            function(bad)


def test_sampled_sets_have_three_independent_eval_streams():
    for name in ("sphere3d", "ring", "grid"):
        splits = {split: data.eval_examples(config(name), split=split, num_examples=8)
                  for split in ("train", "validation", "test")}
        for a, b in itertools.combinations(splits.values(), 2):
            assert not np.any(np.all(a[:, None] == b[None], axis=-1))  # no shared row


def test_validation_and_test_are_disjoint():
    # Sampled sets: the validation and test streams (same draws as eval_examples).
    validation, test = data.validation_and_test(config("ring"), num_examples=50, seed=3)
    assert validation.shape == test.shape == (50, 2)
    np.testing.assert_array_equal(test, data.eval_examples(config("ring"), split="test",
                                                           num_examples=50, seed=3))
    np.testing.assert_array_equal(validation, data.eval_examples(
        config("ring"), split="validation", num_examples=50, seed=3))
    # Digits: the test split (297 images) in eval_examples order, first half validation.
    digits_config = config("digits", image_size=8)
    validation, test = data.validation_and_test(digits_config, num_examples=1000, seed=0)
    assert validation.shape == (148, 8, 8, 1) and test.shape == (149, 8, 8, 1)
    ordered = data.eval_examples(digits_config, split="test", num_examples=297, seed=0)
    np.testing.assert_array_equal(np.concatenate([validation, test]), ordered)
    rows = lambda x: {e.tobytes() for e in x}  # noqa: E731
    assert not rows(validation) & rows(test)
    assert rows(validation) | rows(test) == rows(digits.load("test", 8))
    small_v, small_t = data.validation_and_test(digits_config, num_examples=10, seed=0)
    assert small_v.shape[0] == small_t.shape[0] == 10
    # Tabular sets: their own 'valid' and 'test' splits.
    mixture = config("gaussian_mixture")
    validation, test = data.validation_and_test(mixture, num_examples=10**6)
    assert rows(validation) == rows(data.full_split(mixture, "valid"))
    assert rows(test) == rows(data.full_split(mixture, "test"))


def test_exact_metrics_and_metric_goals():
    ring = config("ring")
    samples = data.eval_examples(ring, num_examples=400)
    metrics = data.exact_metrics(ring, samples)
    assert set(metrics) == {"share_within_3std", "modes_covered", "mode_kl", "bin_kl"}
    assert metrics["modes_covered"] == 8.0 and metrics["share_within_3std"] > 0.95
    assert data.exact_metrics(config("sphere3d"), np.zeros((4, 3))) == {}
    assert data.exact_metrics(config("digits", image_size=8), np.zeros((4, 8, 8, 1))) == {}
    with pytest.raises(ValueError, match="N >= 1"):
        data.exact_metrics(ring, np.zeros((0, 2)))
    assert data.metric_goals(ring) == {"share_within_3std": "max", "modes_covered": "max",
                                       "mode_kl": "min", "bin_kl": "min"}
    assert data.metric_goals(config("digits")) == {}
    for name, goal in (("mmd", "min"), ("fid", "min"), ("fid_test", "min"), ("kid_test", "min"),
                       ("mode_kl", "min"), ("share_within_3std", "max"),
                       ("modes_covered", "max")):
        assert data.metric_goal(ring, name) == goal, name
    assert data.metric_goal(config("sphere3d"), "fid_train") == "min"
    with pytest.raises(ValueError, match="energy and acceptance"):
        data.metric_goal(ring, "energy")
    with pytest.raises(ValueError, match="mode_kl.*use one of"):
        data.metric_goal(config("sphere3d"), "mode_kl")
