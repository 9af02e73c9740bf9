"""Datasets by name: shapes, seed-ordered training batches and evaluation examples.

    info = get_info(config.data)
    batches = train_batches(config.data, batch_size=128, seed=config.seed, start_step=step)
    test = eval_examples(config.data, split="test", num_examples=1000)
    validation, test = validation_and_test(config.data, num_examples=1000, seed=config.seed)
    scores = exact_metrics(config.data, samples)   # {} unless the set has exact metrics

Names (DATASETS): 'sphere3d' (a ground-truth GEBM in R^3, shape (3,)), 'ring' and 'grid'
(2-D Gaussian mixtures, shape (2,)), 'curve' (a known density on a wavy 1-D curve in 2-D, shape
(2,)), 'digits' (scikit-learn's digits, (S, S, 1) images), 'shapes' (16x16x1
images of one disc with (cx, cy, r) from a known 4-cluster mixture).
All are embedded: ``data_dir`` is ignored. Images are NHWC float32 in [-1, 1]; vectors are
float32 in the data's own units.

Order: the global batch of step t depends only on (data, seed, t, batch_size), and for these
embedded sets process p of P receives rows [p B / P, (p + 1) B / P) of it (see
`kale_jax.data.batching`). Sampled sets (sphere3d, ring, grid, curve,
shapes) draw fresh i.i.d. batches;
digits is read in epochs shuffled per (seed, epoch). Evaluation examples come from random streams
independent of training (sampled sets: splits 'train', 'validation' and 'test', three independent
streams) or from the held-out split (digits).

Choosing a setting on held-out data and reporting on held-out data needs two disjoint sets:
`validation_and_test` returns them for every dataset (its docstring says how each set is split).

Exact metrics: a dataset whose true distribution is known can register `exact_metrics`, a
function (data_config, samples (N, *shape)) -> {name: float} that scores samples without reference
data, and `metric_goals` {name: 'min' | 'max'} (which direction is better). `exact_metrics(...)`
calls it ({} for sets without); `metric_goal(...)` says which direction is better for any metric
name a caller may select on. Registered: ring and grid (kale_jax.data.toys.exact_metrics:
share_within_3std (max), modes_covered (max), mode_kl (min), bin_kl (min)) and curve
(kale_jax.data.curve.exact_metrics: curve_distance, on_curve_share, arc_w1, arc_ks) and shapes
(kale_jax.data.shapes.exact_metrics: valid_share, cluster_kl, param_w1).

Adding a dataset (the tfds image sets): write a module with its info / train_batches /
eval_examples and register a `_Dataset` (with the splits it accepts, and optionally its exact
metrics) in `_REGISTRY`; the argument checks here apply to all.

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
    curve:  data.noise (0.0: points exactly on the curve)
    digits: data.image_size in (8, 16, 32, 64) (32)
    shapes: data.image_size in (16,) (16)
    tfds sets: data.data_dir, data.manual_dir, data.image_size, data.crop_size (celeb_a),
               data.shuffle_buffer, data.prefetch, data.cache
"""
from __future__ import annotations

import types
from typing import Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional

import numpy as np

from kale_jax import checks
from kale_jax.data import (batching, curve, digits, shapes, sphere3d, tabular, tfds_images,
                           toys)

SPLITS = ("train", "test")  # the splits of the embedded sets
SAMPLED_SPLITS = ("train", "validation", "test")  # sampled sets: three independent streams
# Metrics every dataset can be selected on, by name or prefix, and which direction is better.
_GENERIC_GOALS = {"mmd": "min", "fid": "min", "kid": "min"}
_GENERIC_PREFIXES = {"fid_": "min", "kid_": "min"}


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
    # (data_config, samples (N, *shape)) -> {name: float}: metrics that need no reference data
    # because the true distribution is known; None: the set has none.
    exact_metrics: Optional[Callable[[Mapping, np.ndarray], Dict[str, float]]] = None
    # name -> 'min' or 'max': which direction of each exact metric is better.
    metric_goals: Mapping[str, str] = types.MappingProxyType({})


_SAMPLED: set[str] = set()  # names of the sets made by _sampled (independent validation stream)


def _sampled(name: str, shape: tuple[int, ...], make_draw, exact_metrics=None,
             metric_goals: Mapping[str, str] = types.MappingProxyType({}),
             kind: str = "vector") -> _Dataset:
    """A dataset drawn fresh each step by `make_draw(data_config)(key, n) -> (n, *shape)`.

    Its splits 'train', 'validation' and 'test' are independent random streams."""
    _SAMPLED.add(name)

    def info(data_config):
        make_draw(data_config)  # validates the dataset's keys
        return DatasetInfo(name, shape, kind)

    def train(data_config, **kwargs):
        return batching.sampled_train_batches(make_draw(data_config), **kwargs)

    def evaluate(data_config, **kwargs):
        return batching.sampled_eval_examples(make_draw(data_config), **kwargs)

    return _Dataset(info, train, evaluate, splits=SAMPLED_SPLITS, exact_metrics=exact_metrics,
                    metric_goals=metric_goals)


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
    "ring": _sampled("ring", (2,), toys.sampler, toys.exact_metrics, toys.METRIC_GOALS),
    "grid": _sampled("grid", (2,), toys.sampler, toys.exact_metrics, toys.METRIC_GOALS),
    "curve": _sampled("curve", (2,), curve.sampler, curve.exact_metrics, curve.METRIC_GOALS),
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
    checks.check_choice(name, "config.data.name", DATASETS)
    return _REGISTRY[name]


def _check_int(name: str, value: Any, minimum: int) -> None:
    checks.check_int(value, name, minimum=minimum)


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

    Sampled sets draw them from a stream independent of training (and of the other splits;
    they have 'train', 'validation' and 'test'); digits returns a seed-determined subset of the
    split (ValueError if it has fewer).
    """
    dataset = _dataset(data_config)
    if split not in dataset.splits:
        raise ValueError(f"split must be one of {dataset.splits} for data.name="
                         f"{data_config.get('name')!r}, got {split!r}.")
    _check_int("num_examples", num_examples, 1)
    _check_int("seed", seed, 0)
    return dataset.eval_examples(data_config, split=split, num_examples=int(num_examples),
                                 seed=int(seed))


def _split_size(data_config: Mapping[str, Any], split: str) -> Optional[int]:
    """Examples in `split` of a finite set held in memory; None when it is not cheap to know."""
    name = data_config.get("name", None)
    if name == "digits":
        return digits.load(split, digits.image_size(data_config)).shape[0]
    if name in tabular.NAMES:
        return tabular.split(data_config, split).shape[0]
    return None


def validation_and_test(data_config: Mapping[str, Any], *, num_examples: int,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint held-out sets: one to choose a setting on, one to report it on.

    * Sampled sets (sphere3d, ring, grid, and any set registered with `_sampled`): the
      'validation' and 'test' streams of `eval_examples`, num_examples each (independent draws).
    * Tabular sets: their own 'valid' and 'test' splits, at most num_examples of each.
    * Every other set (digits, the tfds image sets; they have no validation split of their own,
      or one that is their test split): the test split in `eval_examples` order (a permutation
      fixed by `seed`), first min(2 num_examples, split size) examples, of which the first half
      (rounded down) is the validation set and the rest the test set. For digits at the default
      split this is 148 validation and 149 test images of the 297.

    Args:
        data_config: the data config (``config.data``).
        num_examples: wanted examples per set (>= 1); finite sets may give fewer.
        seed: the run's seed.
    Returns:
        (validation, test): float32 (n_v, *info.shape) and (n_t, *info.shape), disjoint.
    """
    dataset = _dataset(data_config)
    _check_int("num_examples", num_examples, 1)
    _check_int("seed", seed, 0)
    if data_config.get("name") in _SAMPLED:
        return (eval_examples(data_config, split="validation", num_examples=num_examples,
                              seed=seed),
                eval_examples(data_config, split="test", num_examples=num_examples, seed=seed))
    if data_config.get("name") in tabular.NAMES:
        return tuple(eval_examples(data_config, split=split, seed=seed,
                                   num_examples=min(num_examples,
                                                    _split_size(data_config, split)))
                     for split in ("valid", "test"))
    wanted = 2 * num_examples
    size = _split_size(data_config, "test")
    if size is not None:
        wanted = min(wanted, size)
    if wanted < 2:
        raise ValueError(f"the test split of data.name={data_config.get('name')!r} has {wanted} "
                         "example(s): too few to split into validation and test halves.")
    examples = eval_examples(data_config, split="test", num_examples=wanted, seed=seed)
    half = examples.shape[0] // 2
    return examples[:half], examples[half:]


def exact_metrics(data_config: Mapping[str, Any], samples: np.ndarray) -> Dict[str, float]:
    """The dataset's exact metrics of `samples` ({} when the set registers none).

    Exact metrics score samples against the known true distribution, without reference data
    (ring / grid: share_within_3std, modes_covered, mode_kl; see kale_jax.data.toys).

    Args:
        data_config: the data config (``config.data``).
        samples: (N, *info.shape), N >= 1, in the data's units.
    Returns:
        {name: float}; `metric_goal(data_config, name)` says which direction is better.
    """
    dataset = _dataset(data_config)
    if dataset.exact_metrics is None:
        return {}
    samples = np.asarray(samples)
    if samples.ndim < 1 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, ...) with N >= 1, got {samples.shape}.")
    return {k: float(v) for k, v in dataset.exact_metrics(data_config, samples).items()}


def metric_goals(data_config: Mapping[str, Any]) -> Dict[str, str]:
    """{exact metric name: 'min' | 'max'} of the dataset ({} when it has none)."""
    return dict(_dataset(data_config).metric_goals)


def metric_goal(data_config: Mapping[str, Any], name: str) -> str:
    """Which direction of metric `name` is better: 'min' or 'max'.

    'mmd', 'fid', 'kid', 'fid_*' and 'kid_*' (distances to data) are 'min'; a dataset's exact
    metrics have the direction it registered. Energy and acceptance rate say nothing about sample
    quality and cannot be selected on.

    Raises:
        ValueError: `name` is not a quality metric of this dataset (the message lists them).
    """
    goals = _dataset(data_config).metric_goals
    if name in goals:
        return goals[name]
    if name in _GENERIC_GOALS:
        return _GENERIC_GOALS[name]
    for prefix, goal in _GENERIC_PREFIXES.items():
        if isinstance(name, str) and name.startswith(prefix):
            return goal
    allowed = tuple(_GENERIC_GOALS) + tuple(f"{p}*" for p in _GENERIC_PREFIXES) + tuple(goals)
    why = (" (energy and acceptance rate do not measure sample quality)"
           if name in ("energy", "acceptance", "acceptance_rate") else "")
    raise ValueError(f"metric {name!r} has no better direction for data.name="
                     f"{data_config.get('name')!r}{why}; use one of {allowed}.")


def full_split(data_config: Mapping[str, Any], split: str) -> np.ndarray:
    """Every example of `split` of a tabular set ('train', 'valid' or 'test'), float32 (N, D).

    ValueError for sets without fixed splits (use eval_examples)."""
    name = data_config.get("name", None)
    if name not in tabular.NAMES:
        raise ValueError(f"full_split needs a tabular set {tabular.NAMES}, got {name!r}.")
    return tabular.split(data_config, split)


__all__ = ["DATASETS", "full_split", "EMBEDDED_DATASETS", "DatasetInfo", "SPLITS", "eval_examples",
           "get_info", "train_batches", "validation_and_test", "exact_metrics", "metric_goal",
           "metric_goals"]
