"""The plateau scheduler: both learning rates decay when a held-out metric stops improving.

The authors' recipe (MichaelArbel/GeneralizedEBM, utils/fid_scheduler.MMDScheduler), with the
settings of config.train.plateau (configs/default.py):

* every `every` base steps, `num_samples` base samples B(z) (inference mode, fresh latents drawn
  from the run's key and the step, so a resumed run draws the same ones) are compared with
  `num_samples` held-out examples X: on Inception features with KID's cubic kernel when
  Inception weights are configured for image data (metric 'kid'), else on the samples
  themselves with the Gaussian-mixture kernel of kale_jax.metrics.mmd, bandwidths from X
  (metric 'mmd'); only the kernel sums of each evaluation are kept
  (kale_jax.metrics.three_sample.SetSums);
* the relative MMD test (kale_jax.metrics.three_sample, Bounliphone et al. 2016) compares the
  new sample Y with the one Z of `lookback` evaluations before: p = Phi(D / std),
  D = MMD^2(X, Y) - MMD^2(X, Z). p < `p_value` is a significant improvement and resets the
  count of failures; otherwise the failure count grows, and at `patience` failures both
  learning rates are multiplied by `factor` (state.plateau.scale; optim.scale_updates), the
  count restarts and the next `patience` evaluations only refill the buffer (no test);
* the first `lookback` evaluations only fill the buffer.
One deviation, `wait_for_improvement` (default True): no failure is counted before the run's
first clear improvement, a test with p < ARM_P_VALUE (1e-4). A metric that is flat from the
start (noise around a constant: a test's p-value is then uniform on [0, 1], so the authors' rule
counts a failure 90% of the time and decays after a few checks) never decays the rates; the
stricter level keeps a chance improvement from arming it (0.01% per check when calibrated; 0 of
20 seeds in tests/test_plateau.py's noise sequence). The authors'
code (False) counts from the first test. With their cadence the first test comes 22k base steps
into a run, long after the metric's first clear improvement, so the two agree in practice.

Everything the scheduler needs lives in PlateauState, a field of the TrainState, so it is in
every checkpoint and a resumed run continues exactly; each check writes one log line and its
numbers go to metrics.jsonl (lr_scale, plateau_p_value, plateau_mmd2, ...).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kale_jax import checks, data, latent, metrics
from kale_jax.errors import ConfigError
from kale_jax.metrics import three_sample

Array = jax.Array
METRICS = ("auto", "kid", "mmd")
PLATEAU_STREAM = 4  # key stream of the scheduler's latents (steps.py uses 0-3)
ARM_P_VALUE = 1e-4  # wait_for_improvement: failures count after the first test below this


class PlateauSpec(NamedTuple):
    """config.train.plateau (see configs/default.py); hashable."""
    every: int
    lookback: int
    patience: int
    factor: float
    p_value: float
    num_samples: int
    metric: str
    wait_for_improvement: bool


def spec_from_config(config: ml_collections.ConfigDict) -> Optional[PlateauSpec]:
    """The PlateauSpec of config.train.plateau, or None when it is off or absent."""
    plateau = config.train.get("plateau")
    if plateau is None or not plateau.get("enabled", False):
        return None
    return PlateauSpec(int(plateau.every), int(plateau.lookback), int(plateau.patience),
                       float(plateau.factor), float(plateau.p_value), int(plateau.num_samples),
                       str(plateau.metric), bool(plateau.get("wait_for_improvement", True)))


class PlateauState(NamedTuple):
    """The scheduler's state (a pytree of arrays; a TrainState field).

    Attributes:
      scale: float32 (), the factor on both learning rates (1 until the first decay).
      sums: three_sample.SetSums of the last `lookback` evaluations, a ring buffer: leaves
        (lookback, m), (lookback,), (lookback, m), (lookback, n), (lookback,), float32.
      stored: int32 (), summaries written so far, at most lookback.
      cursor: int32 (), the next slot to write, which holds the oldest summary.
      refill: int32 (), evaluations left that only refill the buffer (after a decay).
      failures: int32 (), tests in a row without a significant improvement.
      armed: int32 (), 1 once a test has shown a clear improvement (p < ARM_P_VALUE).
      num_decays: int32 (), decays so far.
      p_value: float32 (), the last check's p-value; -1 when it ran no test (NaN would stop
        the run: checkpoints and logged values must be finite).
    """
    scale: Array
    sums: three_sample.SetSums
    stored: Array
    cursor: Array
    refill: Array
    failures: Array
    armed: Array
    num_decays: Array
    p_value: Array


def init(lookback: int, num_samples: int) -> PlateauState:
    """A fresh state (scale 1, empty buffer) for `lookback` slots of `num_samples` points."""
    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
    count = jnp.zeros((), jnp.int32)
    return PlateauState(
        scale=jnp.ones((), jnp.float32),
        sums=three_sample.SetSums(zeros((lookback, num_samples)), zeros((lookback,)),
                                  zeros((lookback, num_samples)), zeros((lookback, num_samples)),
                                  zeros((lookback,))),
        stored=count, cursor=count, refill=count, failures=count, armed=count,
        num_decays=count, p_value=jnp.full((), -1.0, jnp.float32))


def update(spec: PlateauSpec, state: PlateauState,
           new: three_sample.SetSums) -> Tuple[PlateauState, Dict[str, Any]]:
    """One check: test `new` against the summary of `lookback` checks before, decide, store.

    Host-side (numpy); deterministic in its inputs.

    Args:
      spec: the scheduler's settings.
      state: its state (one copy; host or device arrays).
      new: the SetSums of this check's samples against the reference.
    Returns:
      (new state as numpy arrays, a dict: 'action' in {'fill', 'improved', 'no_improvement',
      'decay'}, 'p_value', 'difference' (NaN without a test), 'failures', 'scale').
    """
    s = jax.tree_util.tree_map(np.asarray, state)
    cursor = int(s.cursor)
    scale, failures, armed = float(s.scale), int(s.failures), int(s.armed)
    refill, num_decays = int(s.refill), int(s.num_decays)
    p_value = difference = float("nan")
    if int(s.stored) < spec.lookback or refill > 0:
        action = "fill"
        refill = max(refill - 1, 0)
    else:
        old = three_sample.SetSums(*(np.asarray(leaf[cursor], np.float64) for leaf in s.sums))
        result = three_sample.relative_test(
            three_sample.SetSums(*(np.asarray(leaf, np.float64) for leaf in new)), old)
        p_value, difference = result.p_value, result.difference
        if p_value < spec.p_value:
            action, failures = "improved", 0
            armed = max(armed, int(p_value < ARM_P_VALUE))
        else:
            action = "no_improvement"
            if armed or not spec.wait_for_improvement:
                failures += 1
            if failures >= spec.patience:
                action, failures, refill = "decay", 0, spec.patience
                scale *= spec.factor
                num_decays += 1
    sums = []
    for leaf, value in zip(s.sums, new):
        leaf = np.array(leaf, np.float32)
        leaf[cursor] = np.asarray(value, np.float32)
        sums.append(leaf)
    new_state = PlateauState(
        scale=np.float32(scale), sums=three_sample.SetSums(*sums),
        stored=np.int32(min(int(s.stored) + 1, spec.lookback)),
        cursor=np.int32((cursor + 1) % spec.lookback), refill=np.int32(refill),
        failures=np.int32(failures), armed=np.int32(armed), num_decays=np.int32(num_decays),
        p_value=np.float32(-1.0 if math.isnan(p_value) else p_value))
    return new_state, {"action": action, "p_value": p_value, "difference": difference,
                       "failures": failures, "scale": scale}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line naming the key) on a bad config.train.plateau; nothing
    when it is absent or off. Reads no data (the 'kid' weights' file is only checked to exist)."""
    plateau = config.train.get("plateau")
    if plateau is None:
        return
    key = "config.train.plateau."
    if not checks.check_bool(plateau.get("enabled"), key + "enabled"):
        return
    every = checks.check_int(plateau.get("every"), key + "every", minimum=1)
    log_every = config.train.log_every
    if every % log_every:
        raise ConfigError(f"{key}every={every} must be a multiple of config.train.log_every="
                          f"{log_every}, so that each check's numbers reach metrics.jsonl; use "
                          f"{every - every % log_every or log_every} or change log_every")
    checks.check_int(plateau.get("lookback"), key + "lookback", minimum=1)
    checks.check_int(plateau.get("patience"), key + "patience", minimum=1)
    checks.check_probability(plateau.get("factor"), key + "factor", include_zero=False,
                             fix="the learning rates' factor at a decay (1: log decisions only)")
    checks.check_probability(plateau.get("p_value"), key + "p_value")
    checks.check_int(plateau.get("num_samples"), key + "num_samples", minimum=4)
    checks.check_choice(plateau.get("metric"), key + "metric", METRICS)
    checks.check_bool(plateau.get("wait_for_improvement", True), key + "wait_for_improvement")
    if plateau.metric == "kid":
        path = config.get("sample", {}).get("inception_path", "")
        if data.get_info(config.data).kind != "image":
            raise ConfigError(f"{key}metric='kid' needs image data, got "
                              f"{config.data.name!r}; use 'mmd' or 'auto'")
        if not path or not os.path.exists(path):
            raise ConfigError(f"{key}metric='kid' needs Inception weights at "
                              f"config.sample.inception_path={path!r} (third_party/inception/"
                              "README.md says how to get them); use 'mmd' or 'auto'")


SHAPE_KEYS = ("lookback", "num_samples")


def check_resume(saved_config: Any, current: Any, where: str) -> None:
    """ConfigError when a checkpoint's plateau state does not fit this run's config.

    A checkpoint's TrainState holds the scheduler's state exactly when its config had
    train.plateau.enabled (configs written before the scheduler existed have no such key: off),
    and its buffer's shape is fixed by lookback and num_samples.

    Args:
      saved_config, current: the checkpoint's and this run's configs as nested dicts (JSON).
      where: the checkpoint, for the message.
    """
    def get(config, leaf):
        node = config.get("train", {}).get("plateau") if isinstance(config, dict) else None
        return node.get(leaf) if isinstance(node, dict) else None

    old, new = bool(get(saved_config, "enabled")), bool(get(current, "enabled"))
    if old != new:
        raise ConfigError(f"config.train.plateau.enabled={new} but {where} was written with "
                          f"{old} (the scheduler's state is in the checkpoint or not); use "
                          f"--config.train.plateau.enabled={old} or a new --workdir")
    for leaf in SHAPE_KEYS if new else ():
        if get(saved_config, leaf) != get(current, leaf):
            raise ConfigError(f"config.train.plateau.{leaf}={get(current, leaf)!r} but {where} "
                              f"was written with {get(saved_config, leaf)!r}; use the "
                              "checkpoint's value or a new --workdir")


def resolve_metric(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> str:
    """'kid' or 'mmd' for config.train.plateau.metric ('auto': 'kid' for image data when the
    Inception weights at config.sample.inception_path exist, else 'mmd')."""
    metric = config.train.plateau.metric
    if metric != "auto":
        return metric
    path = config.get("sample", {}).get("inception_path", "")
    return "kid" if info.kind == "image" and path and os.path.exists(path) else "mmd"


class Plateau:
    """The scheduler of one run: its reference data, kernel and compiled sampler.

    Args:
      config: the full config (train.plateau enabled; data, seed, sample.inception_path).
      spec: the PlateauSpec of the config.
      generator: the generator module; latent_dim: its latent size.
      info: the dataset's DatasetInfo.
    """

    def __init__(self, config: ml_collections.ConfigDict, spec: PlateauSpec, generator: Any,
                 latent_dim: int, info: data.DatasetInfo):
        self.spec = spec
        self.metric = resolve_metric(config, info)
        reference = np.asarray(data.eval_examples(config.data, split="test",
                                                  num_examples=spec.num_samples,
                                                  seed=config.seed), np.float32)
        self._features = lambda x: np.asarray(x, np.float64).reshape(x.shape[0], -1)
        if self.metric == "kid":
            from kale_jax.metrics import inception  # pylint: disable=g-import-not-at-top
            extractor = inception.FeatureExtractor(
                inception.load_variables(config.sample.inception_path),
                batch_size=config.sample.inception_batch_size)
            self._features = lambda x: np.asarray(extractor(x), np.float64)
            self.kernel = three_sample.polynomial_kernel
        else:
            bandwidths = np.asarray(metrics.reference_bandwidths(reference), np.float64)
            self.kernel = three_sample.gaussian_mixture_kernel(bandwidths)
        self.reference = self._features(reference)
        k_xx = self.kernel(self.reference, self.reference)
        n = k_xx.shape[0]
        self._mean_xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
        self._samples = jax.jit(functools.partial(_base_samples, generator, latent_dim,
                                                  spec.num_samples))

    def __call__(self, state: Any, step: int) -> Tuple[PlateauState, Dict[str, float]]:
        """The check at base step `step` on one copy of the TrainState.

        Returns:
          (the new PlateauState as numpy arrays, scalars for metrics.jsonl: lr_scale,
          plateau_mmd2 (the metric: MMD^2_u or KID of the new samples), plateau_failures,
          plateau_decayed (1.0 at a decay), and when a test ran plateau_p_value and
          plateau_difference (D, the new sample's MMD^2 minus the old one's)).
        """
        samples = np.asarray(jax.device_get(self._samples(state, jnp.asarray(step))))
        sums = three_sample.set_sums(self.kernel, self.reference, self._features(samples))
        m, n = sums.yy_rows.shape[0], sums.xy_rows.shape[0]
        mmd2 = (self._mean_xx + float(np.sum(sums.yy_rows)) / (m * (m - 1))
                - 2.0 * float(np.sum(sums.xy_rows)) / (n * m))
        new_state, decision = update(self.spec, state.plateau, sums)
        text = {"fill": "filling the buffer (no test)",
                "improved": "significant improvement",
                "no_improvement": f"no significant improvement "
                                  f"({decision['failures']}/{self.spec.patience})",
                "decay": f"decayed both learning rates x{self.spec.factor:g}"}[decision["action"]]
        logging.info("plateau at base step %d: %s %.4g, p=%.3g vs %d checks before: %s; "
                     "lr scale %.4g.", step, self.metric, mmd2, decision["p_value"],
                     self.spec.lookback, text, decision["scale"])
        scalars = {"lr_scale": decision["scale"], "plateau_mmd2": mmd2,
                   "plateau_failures": float(decision["failures"]),
                   "plateau_decayed": float(decision["action"] == "decay")}
        if decision["action"] != "fill":
            scalars.update(plateau_p_value=decision["p_value"],
                           plateau_difference=decision["difference"])
        return new_state, scalars


def _base_samples(generator: Any, latent_dim: int, num_samples: int, state: Any,
                  step: Array) -> Array:
    """num_samples base samples B(z), z from fold_in(fold_in(key, PLATEAU_STREAM), step),
    generator in inference mode."""
    key = jax.random.fold_in(jax.random.fold_in(state.key, PLATEAU_STREAM), step)
    z = jax.random.normal(key, (num_samples, latent_dim), jnp.float32)
    return latent.generator_fn(generator, state.generator_variables())(z)


def is_check_step(spec: Optional[PlateauSpec], step: int) -> bool:
    """Whether the scheduler checks after base step `step` (1-based count of steps done)."""
    return spec is not None and step % spec.every == 0
