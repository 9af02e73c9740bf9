"""Held-out likelihoods during training when the base is a flow (networks.flows).

Metrics (metrics.jsonl names; nats per example; kale_jax.metrics.nll computes them):
  base_valid_nll, base_test_nll     -mean log g(x) of the flow base
  gebm_valid_nll, gebm_test_nll     -mean log q(x) of the GEBM q = g exp(-E) / Z; optimistic in
                                    expectation (log of an unbiased Z estimate: Jensen), by
                                    about log_z_stderr^2 / 2
  gebm_test_nll_sem                 standard error of gebm_test_nll over the test examples
  log_z, log_z_stderr               Monte-Carlo log Z over eval.nll_base_samples base samples
                                    and its delta-method standard error
  log_z_ess                         Kish's effective sample size of the weights exp(-E) behind
                                    log_z (far below eval.nll_base_samples: log_z is unreliable)
  valid_nll, test_nll               those of the model being trained: the flow for
                                    model.base_objective='mle', the GEBM for 'kale' and
                                    'gebm_mle'
  true_test_nll                     the data's exact density on the test split, when known
                                    (the embedded 'gaussian_mixture')
Splits: a tabular set's whole 'valid' and 'test' splits; other vector sets use
eval.num_heldout examples of their 'test' split (and, as 'valid', of 'train').
"""
from __future__ import annotations

from typing import Dict, Optional

import jax
import ml_collections
import numpy as np

from kale_jax import data, networks
from kale_jax.data import tabular
from kale_jax.metrics import nll
from kale_jax.train.state import TrainState
from kale_jax.train.steps import EVAL_STREAM, StepSpec

DEFAULT_NLL_BASE_SAMPLES = 50_000


class DensityMetrics:
    """Callable (state) -> metrics dict for a run whose generator is a flow."""

    def __init__(self, config: ml_collections.ConfigDict, spec: StepSpec):
        self.spec = spec
        self.objective = config.model.get("base_objective", "kale")
        self.num_base_samples = int(config.eval.get("nll_base_samples", None)
                                    or DEFAULT_NLL_BASE_SAMPLES)
        if config.data.name in tabular.NAMES:
            self.splits = {s: data.full_split(config.data, s) for s in ("valid", "test")}
        else:
            n = config.eval.num_heldout
            self.splits = {
                "valid": data.eval_examples(config.data, split="train", num_examples=n,
                                            seed=config.seed),
                "test": data.eval_examples(config.data, split="test", num_examples=n,
                                           seed=config.seed)}
        true_log_prob = tabular.known_log_prob(config.data)
        self.true_test_nll = (None if true_log_prob is None
                              else float(-np.mean(true_log_prob(self.splits["test"]))))

    @staticmethod
    def maybe(config: ml_collections.ConfigDict, spec: StepSpec) -> Optional["DensityMetrics"]:
        """A DensityMetrics when the generator is a flow, else None."""
        return DensityMetrics(config, spec) if networks.is_flow(spec.generator) else None

    def __call__(self, state: TrainState) -> Dict[str, float]:
        key = jax.random.fold_in(jax.random.fold_in(state.key, EVAL_STREAM), 1)
        out = nll.flow_and_gebm_nll(self.spec.generator, self.spec.energy,
                                    state.generator_variables(), state.energy_variables(),
                                    self.splits, key, self.num_base_samples,
                                    self.spec.energy_floor)
        out.pop("gebm_valid_nll_sem", None)
        model = "base" if self.objective == "mle" else "gebm"
        out["valid_nll"] = out[f"{model}_valid_nll"]
        out["test_nll"] = out[f"{model}_test_nll"]
        if self.true_test_nll is not None:
            out["true_test_nll"] = self.true_test_nll
        return out
