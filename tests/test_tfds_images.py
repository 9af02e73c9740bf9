"""Tests of kale_jax.data.tfds_images: the tfds image pipelines.

Two kinds of data:
* A real, prepared `cifar10` in a temporary data_dir, built by tfds' own builder from a tiny
  fake copy of the CIFAR-10 binary archive (40 train + 12 test images) whose pixels identify each
  example: red = example index + 1, green = 0 (train) or 255 (test), blue = a 0..255 ramp.
  Only tfds' download step is replaced (it returns the fake archive's directory). Order, resume,
  process shards and held-out splits are checked example by example on it.
* `tfds.testing.mock_data` (random images with each builder's real features) for the shapes,
  dtype and range of all four pipelines.
"""
from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kale_jax.data import tfds_images

NUM_TRAIN = 40  # 8 per data_batch_k.bin, k = 1..5
NUM_TEST = 12
_RAMP = (np.arange(32 * 32) % 256).reshape(32, 32).astype(np.uint8)  # blue channel, 0..255


def _fake_image(index: int, test: bool) -> np.ndarray:
    image = np.empty((32, 32, 3), np.uint8)
    image[..., 0] = index + 1
    image[..., 1] = 255 if test else 0
    image[..., 2] = _RAMP
    return image


def _write_fake_cifar10(root: str) -> None:
    """CIFAR-10 binary format: per record 1 label byte + 3072 bytes (R, G, B planes, 32x32)."""
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(f"class{k}" for k in range(10)) + "\n")

    def write(name, indices, test):
        with open(os.path.join(folder, name), "wb") as f:
            for i in indices:
                f.write(bytes([i % 10]) + _fake_image(i, test).transpose(2, 0, 1).tobytes())

    for k in range(5):
        write(f"data_batch_{k + 1}.bin", range(8 * k, 8 * (k + 1)), test=False)
    write("test_batch.bin", range(NUM_TEST), test=True)


@pytest.fixture(scope="module")
def cifar10_config(tmp_path_factory):
    """data config of a real cifar10 prepared (by `tfds_images.prepare`) from the fake archive."""
    source = str(tmp_path_factory.mktemp("cifar_source"))
    data_dir = str(tmp_path_factory.mktemp("tfds_data"))
    _write_fake_cifar10(source)
    config = {"name": "cifar10", "data_dir": data_dir}
    # tfds' dataset_builder wants the `importlib_resources` backport, which this environment
    # lacks (etils[epath] extra); the standard library's module serves the same purpose.
    from tensorflow_datasets.core import dataset_builder

    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, url: source), \
            mock.patch.object(dataset_builder, "importlib_resources", importlib.resources):
        tfds_images.prepare(config)
    return config


def _ids(batch: np.ndarray) -> np.ndarray:
    """Example indices of a fake-cifar10 batch (red channel = index + 1), checked constant."""
    red = np.rint((batch[..., 0] + 1.0) * 127.5).astype(np.int64)
    assert (red == red[:, :1, :1]).all()
    return red[:, 0, 0] - 1


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_prepared_batches_hold_exact_pixels_of_train_split(cifar10_config):
    batch = next(tfds_images.train_batches(cifar10_config, batch_size=8, seed=0,
                                           process_index=0, process_count=1))
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.float32
    # v -> v / 127.5 - 1 exactly: the blue ramp covers 0..255 (so -1 and 1 are both hit).
    np.testing.assert_allclose(batch[..., 2], np.broadcast_to(_RAMP / 127.5 - 1.0, (8, 32, 32)),
                               atol=1e-6)
    assert batch.min() == -1.0 and batch.max() == 1.0
    np.testing.assert_array_equal(batch[..., 1], -1.0)  # green 0: training images only
    assert set(_ids(batch)) <= set(range(NUM_TRAIN))


def test_each_epoch_is_a_permutation_and_epochs_are_reshuffled(cifar10_config):
    stream = tfds_images.train_batches(cifar10_config, batch_size=8, seed=3, process_index=0,
                                       process_count=1)
    ids = np.concatenate([_ids(b) for b in _take(stream, 10)])  # 80 = two epochs of 40
    epoch0, epoch1 = ids[:NUM_TRAIN], ids[NUM_TRAIN:]
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(NUM_TRAIN))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(NUM_TRAIN))
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, np.sort(epoch0))  # shuffled, not file order


def test_order_is_fixed_by_the_seed(cifar10_config):
    def first_ids(seed):
        stream = tfds_images.train_batches(cifar10_config, batch_size=8, seed=seed,
                                           process_index=0, process_count=1)
        return np.concatenate([_ids(b) for b in _take(stream, 6)])

    np.testing.assert_array_equal(first_ids(5), first_ids(5))
    assert not np.array_equal(first_ids(5), first_ids(6))


def test_cache_keeps_the_same_stream(cifar10_config):
    # The in-memory cache is filled during the first epoch read and reused by later epochs; the
    # batches must not change, also when resuming (start_step 3 = 48 examples in).
    def ids(cache, start_step, num_batches):
        stream = tfds_images.train_batches(dict(cifar10_config, cache=cache), batch_size=16,
                                           seed=2, start_step=start_step, process_index=0,
                                           process_count=1)
        return np.concatenate([_ids(b) for b in _take(stream, num_batches)])

    uncached = ids(False, 0, 11)  # 176 examples: 4.4 epochs
    np.testing.assert_array_equal(ids(True, 0, 11), uncached)
    np.testing.assert_array_equal(ids(True, 3, 8), uncached[48:])


def test_resume_at_step_k_equals_skipping_k_batches(cifar10_config):
    # 40 examples, batches of 8: step 7 starts 16 examples into epoch 1, and the 6 batches
    # read run into epoch 2 (step 10 onwards).
    def stream(start_step):
        return tfds_images.train_batches(cifar10_config, batch_size=8, seed=11,
                                         start_step=start_step, process_index=0,
                                         process_count=1)

    uninterrupted = _take(stream(0), 13)[7:]
    resumed = _take(stream(7), 6)
    for expected, got in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(expected, got)


@pytest.mark.parametrize("process_count", [3, 4])
def test_process_shards_are_disjoint_and_cover_the_split(cifar10_config, process_count):
    shards = []
    for process_index in range(process_count):
        # Local batches of 1 example; 2 * ceil(40 / P) of them span at least a whole epoch of
        # the shard (<= ceil(40 / P) examples), so the ids seen are exactly the shard.
        stream = tfds_images.train_batches(cifar10_config, batch_size=process_count, seed=0,
                                           process_index=process_index,
                                           process_count=process_count)
        reads = 2 * -(-NUM_TRAIN // process_count)
        shards.append(set(np.concatenate([_ids(b) for b in _take(stream, reads)])))
    sizes = [len(shard) for shard in shards]
    assert sum(sizes) == NUM_TRAIN  # pairwise disjoint given the union below
    assert set().union(*shards) == set(range(NUM_TRAIN))
    assert max(sizes) - min(sizes) <= 1


def test_eval_examples_read_the_held_out_split(cifar10_config):
    test = tfds_images.eval_examples(cifar10_config, split="test", num_examples=NUM_TEST)
    assert test.shape == (NUM_TEST, 32, 32, 3) and test.dtype == np.float32
    np.testing.assert_array_equal(test[..., 1], 1.0)  # green 255: the test batch only
    np.testing.assert_array_equal(np.sort(_ids(test)), np.arange(NUM_TEST))
    # Same seed, same subset and order; another seed, another order.
    again = tfds_images.eval_examples(cifar10_config, split="test", num_examples=5)
    np.testing.assert_array_equal(
        again, tfds_images.eval_examples(cifar10_config, split="test", num_examples=5))
    np.testing.assert_array_equal(again, test[:5])
    other = tfds_images.eval_examples(cifar10_config, split="test", num_examples=NUM_TEST,
                                      seed=1)
    assert not np.array_equal(_ids(other), _ids(test))
    train = tfds_images.eval_examples(cifar10_config, split="train", num_examples=NUM_TRAIN)
    np.testing.assert_array_equal(train[..., 1], -1.0)
    with pytest.raises(ValueError, match="num_examples must be <= 12"):
        tfds_images.eval_examples(cifar10_config, split="test", num_examples=NUM_TEST + 1)


def test_not_prepared_error_names_dataset_directory_and_command(tmp_path):
    empty = str(tmp_path)
    with pytest.raises(tfds_images.DatasetNotPreparedError) as raised:
        tfds_images.train_batches({"name": "cifar10", "data_dir": empty}, batch_size=8, seed=0,
                                  process_index=0, process_count=1)
    message = str(raised.value)
    assert "\n" not in message
    assert "'cifar10'" in message and f"'{empty}'" in message
    assert (f"python -m experiments.prepare_data --config=configs/cifar10.py "
            f"--config.data.data_dir={empty}`") in message
    assert isinstance(raised.value, ValueError)

    manual = os.path.join(empty, "manual")
    with pytest.raises(tfds_images.DatasetNotPreparedError) as raised:
        tfds_images.eval_examples({"name": "celeb_a", "data_dir": empty, "manual_dir": manual},
                                  num_examples=4)
    message = str(raised.value)
    assert "\n" not in message and "'celeb_a'" in message
    assert (f"python -m experiments.prepare_data --config=configs/celeba.py "
            f"--config.data.data_dir={empty} --manual_dir={manual}`") in message
    assert "img_align_celeba.zip" in message


_MOCK_CASES = [(name, size) for name in tfds_images.DATASETS
               for size in tfds_images.IMAGE_SETS[name].image_sizes]


@pytest.mark.parametrize("name,size", _MOCK_CASES)
def test_every_pipeline_under_mock_data(name, size):
    config = {"name": name, "data_dir": "/nonexistent/tfds", "image_size": size}
    assert tfds_images.get_info(config) == (name, (size, size, 3), "image")
    with tfds.testing.mock_data(num_examples=6):
        stream = tfds_images.train_batches(config, batch_size=4, seed=0, process_index=1,
                                           process_count=2)
        batches = _take(stream, 4)  # 8 examples: crosses the 6-example epoch
        test = tfds_images.eval_examples(config, num_examples=3)
    for batch in batches + [test]:
        assert batch.dtype == np.float32
        assert batch.shape[1:] == (size, size, 3)
        assert batch.min() >= -1.0 and batch.max() <= 1.0
        assert batch.std() > 0.05  # random uint8 pixels, not a blank image
    assert {b.shape[0] for b in batches} == {2} and test.shape[0] == 3


def _encoded(image: np.ndarray) -> tf.Tensor:
    return tf.io.encode_png(tf.constant(image, tf.uint8))


@pytest.mark.parametrize("crop", [140, 108])
def test_celeba_keeps_exactly_the_centre_crop(crop):
    # White inside the centred crop x crop square of a 218x178 image, black outside: if the
    # crop is centred (rows 39.., cols 19.. for 140), the 64x64 output is all white.
    image = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - crop) // 2, (178 - crop) // 2
    image[top:top + crop, left:left + crop] = 255
    config = {"name": "celeb_a", "image_size": 64, "crop_size": crop}
    out = tfds_images._preprocess_fn(config)(_encoded(image)).numpy()
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    # One pixel more black on the left is seen at the output's left edge.
    image[:, left] = 0
    out = tfds_images._preprocess_fn(config)(_encoded(image)).numpy()
    assert out[:, 0].max() < 0.9 and out[:, 1:].min() > 0.9 - 1e-5


def test_lsun_resizes_shorter_side_then_crops_centre():
    # 100x150 (H x W): shorter side 100 -> 64, width -> 96, centre 64 columns = source columns
    # 25..125. White on columns 20..130, black beyond: the centre crop sees only white, a
    # left-aligned crop (columns 0..100) would see black.
    image = np.zeros((100, 150, 3), np.uint8)
    image[:, 20:130] = 255
    out = tfds_images._preprocess_fn({"name": "lsun/bedroom", "image_size": 64})(
        _encoded(image)).numpy()
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="data.image_size"):
        tfds_images.get_info({"name": "cifar10", "image_size": 64})
    with pytest.raises(ValueError, match="data.name"):
        tfds_images.get_info({"name": "mnist"})
    with pytest.raises(ValueError, match="data.crop_size"):
        tfds_images.get_info({"name": "celeb_a", "crop_size": 200})
    with pytest.raises(ValueError, match="data.shuffle_buffer"):
        tfds_images.get_info({"name": "lsun/bedroom", "shuffle_buffer": 0})
    with pytest.raises(ValueError, match="batch_size must be divisible by process_count=3"):
        tfds_images.train_batches({"name": "cifar10"}, batch_size=8, seed=0, process_index=0,
                                  process_count=3)
    with pytest.raises(ValueError, match="split must be one of"):
        tfds_images.eval_examples({"name": "cifar10"}, split="validation", num_examples=1)


def test_import_does_not_import_tensorflow():
    code = ("import sys, kale_jax.data.tfds_images as t; t.get_info({'name': 'celeb_a'}); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
