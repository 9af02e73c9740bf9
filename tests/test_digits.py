"""Tests for kale_jax.data.digits: the fixed split, the value map and the resize."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kale_jax.data import digits


def test_split_is_fixed_disjoint_and_complete():
    train, test = digits.split_indices("train"), digits.split_indices("test")
    assert len(train) == 1500 and len(test) == 297
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    np.testing.assert_array_equal(train, digits.split_indices("train"))
    # Every class is represented in the test split (180 of each class overall; a random 297
    # holds ~30 of each).
    labels = load_digits().target
    assert np.bincount(labels[test], minlength=10).min() >= 15


def test_value_map_ends_and_middle():
    np.testing.assert_array_equal(digits.to_unit_range(np.array([0, 8, 16])), [-1.0, 0.0, 1.0])


def test_load_matches_scikit_learn_at_native_size():
    raw = load_digits().images
    for split in ("train", "test"):
        images = digits.load(split, 8)
        assert images.shape == (len(digits.split_indices(split)), 8, 8, 1)
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images[..., 0], raw[digits.split_indices(split)] / 8 - 1)


def test_resize_is_bilinear():
    """A ramp along rows is reproduced exactly: jax's half-pixel bilinear resize maps output row
    p of S to input coordinate (p + 0.5) * 8 / S - 0.5, clamped to the edge pixels [0, 7]."""
    ramp = np.broadcast_to(np.arange(8.0)[None, :, None, None], (2, 8, 8, 1))
    for size in (16, 32, 64):
        resized = digits.resize(ramp, size)
        assert resized.shape == (2, size, size, 1)
        coordinate = np.clip((np.arange(size) + 0.5) * 8 / size - 0.5, 0, 7)
        np.testing.assert_allclose(resized[0, :, 3, 0], coordinate, atol=1e-5)
        np.testing.assert_allclose(resized[1, :, -1, 0], coordinate, atol=1e-5)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_resized_digits_stay_in_range(size):
    # Bilinear weights are convex, so [-1, 1] is kept; both ends are still reached because
    # some digits hold 2x2 blocks of background (0) and of full ink (16), and every output pixel
    # interpolates within one 2x2 block of input pixels.
    large = digits.load("test", size)
    assert large.shape == (297, size, size, 1)
    assert large.min() == -1.0 and large.max() <= 1.0
    assert np.isclose(large.max(), 1.0, atol=1e-6)


def test_load_rejects_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        digits.load("train", 28)
    with pytest.raises(ValueError, match="split"):
        digits.load("validation", 8)
