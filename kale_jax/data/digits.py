"""scikit-learn's 8x8 handwritten digits (embedded in scikit-learn: no download).

1797 grayscale images with integer values 0..16 (UCI optical digits, 10 classes), mapped to
[-1, 1] by v / 8 - 1 (0 -> -1 background, 16 -> 1 ink) and shaped (H, W, 1).

Split: a fixed permutation of the 1797 images by numpy's legacy ``RandomState(0)`` (whose stream
numpy keeps frozen); its first 1500 are the training split, the other 297 the test split.

Size: ``data.image_size`` in IMAGE_SIZES, default 32. The 8x8 originals are resized bilinearly
(half-pixel centres, edge values repeated), so the digit keeps filling the frame; zero padding
would leave an 8-pixel digit that the 32/64-pixel conv nets (the only sizes they build) shrink
to a pixel or two after their strided stages. Bilinear weights are non-negative and sum to one,
so values stay in [-1, 1]. 8 gives the originals; 32 and 64 suit the image networks.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import numpy as np

from kale_jax.data import options

NUM_EXAMPLES = 1797
NUM_TRAIN = 1500
NUM_TEST = NUM_EXAMPLES - NUM_TRAIN
SPLIT_SEED = 0
MAX_VALUE = 16.0
IMAGE_SIZES = (8, 16, 32, 64)
DEFAULT_IMAGE_SIZE = 32


def image_size(data_config: Mapping[str, Any]) -> int:
    """``data.image_size`` (default 32), validated against IMAGE_SIZES."""
    return int(options.choice(data_config, "image_size", DEFAULT_IMAGE_SIZE, IMAGE_SIZES))


def split_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's digit order of the 'train' (1500) or 'test' (297) split."""
    permutation = np.random.RandomState(SPLIT_SEED).permutation(NUM_EXAMPLES)
    if split == "train":
        return permutation[:NUM_TRAIN]
    if split == "test":
        return permutation[NUM_TRAIN:]
    raise ValueError(f"split must be one of ('train', 'test'), got {split!r}.")


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """Map digit pixel values 0..16 to [-1, 1]: v / 8 - 1, float32, same shape."""
    return (np.asarray(pixels, np.float32) / (MAX_VALUE / 2) - 1.0).astype(np.float32)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w, C) images to (N, size, size, C), float32."""
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == (size, size):
        return images
    shape = (images.shape[0], size, size, images.shape[3])
    return np.asarray(jax.image.resize(images, shape, method="linear"), np.float32)


@functools.lru_cache(maxsize=4)
def _all_images(size: int) -> np.ndarray:
    # Imported here: the library does no I/O at import, and scikit-learn is only needed here.
    from sklearn.datasets import load_digits

    pixels = load_digits().images  # (1797, 8, 8), values 0..16
    images = resize(to_unit_range(pixels)[..., None], size)
    images.setflags(write=False)
    return images


def load(split: str, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """The images of `split` ('train' or 'test'): float32 (N, size, size, 1) in [-1, 1].

    Read-only and cached per size (a 64x64 copy of all digits is ~30 MB).
    """
    if size not in IMAGE_SIZES:
        raise ValueError(f"size must be one of {IMAGE_SIZES}, got {size!r}.")
    images = _all_images(size)[split_indices(split)]
    images.setflags(write=False)
    return images
