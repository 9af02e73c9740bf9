"""Datasets by name: shapes, seed-ordered training batches and evaluation examples.

    info = get_info(config.data)
    batches = train_batches(config.data, batch_size=128, seed=config.seed, start_step=step)
    test = eval_examples(config.data, split="test", num_examples=1000)

Names (DATASETS): 'sphere3d' (a ground-truth GEBM in R^3, shape (3,)), 'ring' and 'grid'
(2-D Gaussian mixtures, shape (2,)), 'digits' (scikit-learn's digits, (S, S, 1) images),
'shapes' (16x16x1 images of one disc with (cx, cy, r) from a known 4-cluster mixture).
All are embedded: ``data_dir`` is ignored. Images are NHWC float32 in [-1, 1]; vectors are
float32 in the data's own units.

Order: the global batch of step t depends only on (data, seed, t, batch_size), and for these
embedded sets process p of P receives rows [p B / P, (p + 1) B / P) of it (see
`kale_jax.data.batching`). Sampled sets (sphere3d, ring, grid, shapes) draw fresh i.i.d.
batches; digits is read in epochs shuffled per (seed, epoch). Evaluation examples come from
random streams independent of training (sampled sets) or from the held-out split (digits).

Exact metrics: a set with a known truth registers (`_Dataset` fields) ``exact_metrics(
data_config, samples) -> {name: float}``, scoring a model's samples against the truth, and
``metric_goals`` {name: 'min' | 'max'} (which direction is better). 'shapes' does:
valid_share (max), cluster_kl (min), param_w1 (min); see kale_jax.data.shapes.

Adding a dataset (the tfds image sets): write a module with its info / train_batches /
eval_examples and register a `_Dataset` (with the splits it accepts) in `_REGISTRY`; the
argument checks here apply to all.

tfds image sets (kale_jax.data.tfds_images; prepared once by the user, never downloaded at run
time): 'cifar10', 'celeb_a', 'downsampled_imagenet/32x32', 'lsun/bedroom'. Each process reads
and shuffles its own shard, so for these the global batch is the processes' batches side by
side (the usual multi-host pattern) rather than rows of one single-process stream.

Tabular sets (kale_jax.data.tabular; vectors, splits 'train' / 'valid' / 'test', fixed by
data.split_seed): 'redwine', 'whitewine', 'parkinsons', 'hepmass', 'miniboone' read from
data.data_dir (DataError naming the file if missing), and the embedded 'gaussian_mixture' with a
known density. `full_split` returns a whole split (for exact held-out likelihoods).

Per-dataset config keys (all optional):
    ring:   data.radius (2.0), data.std (0.02)
    grid:   data.std (0.05)
    digits: data.image_size in (8, 16, 32, 64) (32)
    shapes: data.image_size in (16,) (16)
    tfds sets: data.data_dir, data.manual_dir, data.image_size, data.crop_size (celeb_a),
               data.shuffle_buffer, data.prefetch, data.cache
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional

import numpy as np

from kale_jax.data import batching, digits, shapes, sphere3d, tabular, tfds_images, toys

SPLITS = ("train", "test")  # the splits of the embedded sets


class DatasetInfo(NamedTuple):
    """name: registry name; shape: one example's shape; kind: 'image' (HWC) or 'vector'."""

    name: str
    shape: tuple[int, ...]
    kind: str


class _Dataset(NamedTuple):
    """What a registered dataset provides; arguments arrive already validated."""

    info: Callable[[Mapping[str, Any]], DatasetInfo]
    # (data_config, *, batch_size, seed, start_step, process_index, process_count) -> iterator
    train_batches: Callable[..., Iterator[np.ndarray]]
    # (data_config, *, split, num_examples, seed) -> array
    eval_examples: Callable[..., np.ndarray]
    splits: tuple[str, ...] = SPLITS
    # (data_config, samples (N, *info.shape)) -> {metric name: value}, for sets with a known
    # truth; metric_goals says for each name whether lower ('min') or higher ('max') is better.
    exact_metrics: Optional[Callable[[Mapping, np.ndarray], Dict[str, float]]] = None
    metric_goals: Mapping[str, str] = {}


def _sampled(name: str, shape: tuple[int, ...], make_draw, kind: str = "vector",
             **extra: Any) -> _Dataset:
    """A dataset drawn fresh each step by `make_draw(data_config)(key, n) -> (n, *shape)`;
    `extra` holds further _Dataset fields (exact_metrics, metric_goals)."""

    def info(data_config):
        make_draw(data_config)  # validates the dataset's keys
        return DatasetInfo(name, shape, kind)

    def train(data_config, **kwargs):
        return batching.sampled_train_batches(make_draw(data_config), **kwargs)

    def evaluate(data_config, **kwargs):
        return batching.sampled_eval_examples(make_draw(data_config), **kwargs)

    return _Dataset(info, train, evaluate, **extra)


def _digits_info(data_config):
    size = digits.image_size(data_config)
    return DatasetInfo("digits", (size, size, 1), "image")


def _digits_train(data_config, **kwargs):
    images = digits.load("train", digits.image_size(data_config))
    return batching.finite_train_batches(images, **kwargs)


def _digits_eval(data_config, *, split, num_examples, seed):
    images = digits.load(split, digits.image_size(data_config))
    if num_examples > images.shape[0]:
        raise ValueError(f"num_examples must be <= {images.shape[0]} (the size of the digits "
                         f"{split!r} split), got {num_examples}.")
    return batching.finite_eval_examples(images, num_examples=num_examples, seed=seed)


_REGISTRY: dict[str, _Dataset] = {
    "sphere3d": _sampled("sphere3d", (sphere3d.DIMENSION,), lambda config: sphere3d.sample),
    "ring": _sampled("ring", (2,), toys.sampler),
    "grid": _sampled("grid", (2,), toys.sampler),
    "digits": _Dataset(_digits_info, _digits_train, _digits_eval),
    "shapes": _sampled("shapes", shapes.SHAPE, shapes.sampler, kind="image",
                       exact_metrics=shapes.exact_metrics, metric_goals=shapes.METRIC_GOALS),
}
EMBEDDED_DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def _tfds_info(data_config):
    return DatasetInfo(*tfds_images.get_info(data_config))


for _name in tfds_images.DATASETS:
    # tfds_images maps split='test' to each set's own held-out split; it checks splits itself.
    _REGISTRY[_name] = _Dataset(_tfds_info, tfds_images.train_batches, tfds_images.eval_examples,
                                splits=tuple(dict.fromkeys(
                                    ("train", "test") + tfds_images.IMAGE_SETS[_name].splits)))


def _tabular_info(data_config):
    return DatasetInfo(data_config.get("name"), (tabular.load(data_config).train.shape[1],),
                       "vector")


def _tabular_train(data_config, **kwargs):
    return batching.finite_train_batches(tabular.split(data_config, "train"), **kwargs)


def _tabular_eval(data_config, *, split, num_examples, seed):
    examples = tabular.split(data_config, split)
    if num_examples > examples.shape[0]:
        raise ValueError(f"num_examples must be <= {examples.shape[0]} (the size of the "
                         f"{data_config.get('name')!r} {split!r} split), got {num_examples}; "
                         "lower config.eval.num_heldout / num_samples.")
    return batching.finite_eval_examples(examples, num_examples=num_examples, seed=seed)


for _name in tabular.NAMES:
    # Tabular sets (kale_jax.data.tabular): the five UCI sets read from data.data_dir and the
    # embedded 'gaussian_mixture'; epoch-shuffled like digits, splits train / valid / test.
    _REGISTRY[_name] = _Dataset(_tabular_info, _tabular_train, _tabular_eval,
                                splits=tabular.SPLITS)
DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def _dataset(data_config: Mapping[str, Any]) -> _Dataset:
    name = data_config.get("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}.")
    return _REGISTRY[name]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def get_info(data_config: Mapping[str, Any]) -> DatasetInfo:
    """Name, per-example shape and kind of the dataset named by ``data_config.name``."""
    return _dataset(data_config).info(data_config)


def train_batches(data_config: Mapping[str, Any], *, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[np.ndarray]:
    """Infinite training batches: float32 (batch_size // process_count, *info.shape) each.

    Args:
        data_config: the data config (``config.data``).
        batch_size: global batch size B, divisible by process_count.
        seed: the run's seed; it alone (with the data, step and B) fixes every batch.
        start_step: the first step to yield (resume): yields the batches of steps
            start_step, start_step + 1, ... exactly as an uninterrupted run would.
        process_index, process_count: this host's share of the global batch, rows
            [p B / P, (p + 1) B / P).
    """
    dataset = _dataset(data_config)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    _check_int("start_step", start_step, 0)
    _check_int("process_count", process_count, 1)
    _check_int("process_index", process_index, 0)
    if process_index >= process_count:
        raise ValueError(f"process_index must be < process_count={process_count}, "
                         f"got {process_index}.")
    if batch_size % process_count:
        raise ValueError(f"batch_size must be divisible by process_count={process_count}, "
                         f"got {batch_size}.")
    return dataset.train_batches(
        data_config, batch_size=int(batch_size), seed=int(seed), start_step=int(start_step),
        process_index=int(process_index), process_count=int(process_count))


def eval_examples(data_config: Mapping[str, Any], *, split: str = "test", num_examples: int,
                  seed: int = 0) -> np.ndarray:
    """`num_examples` evaluation examples of `split`: float32 (num_examples, *info.shape).

    Sampled sets draw them from a stream independent of training (and of the other split);
    digits returns a seed-determined subset of the split (ValueError if it has fewer).
    """
    dataset = _dataset(data_config)
    if split not in dataset.splits:
        raise ValueError(f"split must be one of {dataset.splits} for data.name="
                         f"{data_config.get('name')!r}, got {split!r}.")
    _check_int("num_examples", num_examples, 1)
    _check_int("seed", seed, 0)
    return dataset.eval_examples(data_config, split=split, num_examples=int(num_examples),
                                 seed=int(seed))


def full_split(data_config: Mapping[str, Any], split: str) -> np.ndarray:
    """Every example of `split` of a tabular set ('train', 'valid' or 'test'), float32 (N, D).

    ValueError for sets without fixed splits (use eval_examples)."""
    name = data_config.get("name", None)
    if name not in tabular.NAMES:
        raise ValueError(f"full_split needs a tabular set {tabular.NAMES}, got {name!r}.")
    return tabular.split(data_config, split)


__all__ = ["DATASETS", "full_split", "EMBEDDED_DATASETS", "DatasetInfo", "SPLITS", "eval_examples", "get_info", "train_batches"]
