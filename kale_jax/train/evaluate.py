"""Evaluation during training: held-out KALE, base and GEBM samples, MMD, pictures.

Runs on one device with one copy of the state (jit-compiled once per run). The latents and MCMC
keys are the same at every evaluation (derived from the run's root key), so successive pictures
show the same latents as training moves them.

Metrics (names as written to metrics.jsonl):
  kale_heldout       KALE estimate, Donsker-Varadhan form -mean E(x) - log mean exp(-E(B(z))), on
                     `eval.num_heldout` held-out examples and as many fresh base samples (nats)
  kale_heldout_dual  the dual form 1 - mean(E(x) + A) - mean exp(-(E(B(z)) + A)) with the learned A
  gebm_acceptance    mean MCMC acceptance rate of the GEBM's latent chains
  gebm_nonfinite     number of rejected non-finite MCMC proposals over all chains
  mmd_base, mmd_gebm unbiased MMD^2 (kale_jax.metrics.mmd2) between `eval.num_samples` held-out
                     examples and base / GEBM samples, on one fixed Gaussian-mixture kernel whose
                     bandwidths come from held-out data alone (median heuristic x (0.5, 1, 2)), so
                     the two numbers are comparable; smaller is closer to the data
  mmd_noise          their noise level: MMD^2's standard deviation between two true samples of
                     that size (kale_jax.metrics.mmd2_noise on the reference; constant in a run)
  flow bases only:   valid_nll, test_nll, base_/gebm_{valid,test}_nll, log_z, log_z_stderr, ...
                     (kale_jax.train.density: exact held-out likelihoods)
  base_<name>, gebm_<name>   the dataset's exact metrics of base / GEBM samples, for sets with
                     a known true distribution (kale_jax.data.exact_metrics); ring / grid:
                     share_within_3std, modes_covered, mode_kl (kale_jax.data.toys)
Pictures go to WORKDIR/samples/: base_<step>.png and gebm_<step>.png image grids for image data,
scatter_<step>.png for 2-D and 3-D vector data: columns data / base / GEBM, rows the coordinate
pairs (kale_jax.train.outputs.scatter_figure), each panel titled with its MMD^2 and noise level.
"""
from __future__ import annotations

import functools
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kale_jax import data, kale, latent, metrics, sampling
from kale_jax.train import outputs
from kale_jax.train.state import TrainState
from kale_jax.train.steps import EVAL_STREAM, StepSpec

class Evaluator:
    """Evaluates one copy of a TrainState and writes pictures.

    Args:
      config: the full config (reads data, eval, sampler, seed).
      spec: the step spec (networks, latent size, energy floor).
      info: the dataset's DatasetInfo.
      workdir: pictures go to workdir/samples/.
    """

    def __init__(self, config: ml_collections.ConfigDict, spec: StepSpec,
                 info: data.DatasetInfo, workdir: str, write_pictures: bool = True):
        self.config = config
        self.spec = spec
        self.info = info
        self.samples_dir = os.path.join(workdir, outputs.SAMPLES_DIR)
        self.write_pictures = write_pictures
        num_heldout = config.eval.num_heldout
        num_samples = config.eval.num_samples
        heldout = data.eval_examples(config.data, split="test",
                                     num_examples=max(num_heldout, num_samples), seed=config.seed)
        self.heldout = heldout[:num_heldout]
        self.reference = heldout[:num_samples]  # compared with base / GEBM samples by MMD
        self.bandwidths = metrics.reference_bandwidths(self.reference)
        # No noise level for fewer than 4 references or a non-finite kernel (data that overflow
        # float32: the training steps then stop the run with their own non-finite error).
        usable = self.reference.shape[0] >= 4 and np.all(np.isfinite(self.bandwidths))
        self.mmd_noise = (metrics.mmd2_noise(self.reference, bandwidths=self.bandwidths)
                          if usable else float("nan"))
        sampler = sampling.from_config(config.sampler)
        self._evaluate = _compiled_evaluate(spec, sampler, num_samples)
        from kale_jax.train import density  # pylint: disable=g-import-not-at-top
        self.density = density.DensityMetrics.maybe(config, spec)  # flow bases: likelihoods

    def __call__(self, state: TrainState, step: int) -> Dict[str, float]:
        """Metrics of `state` (one copy, on one device) at base step `step`; writes pictures."""
        key = jax.random.fold_in(jax.random.fold_in(state.key, EVAL_STREAM), 0)
        out = jax.device_get(self._evaluate(state, jnp.asarray(self.heldout), key))
        result = {k: float(v) for k, v in out.items() if np.ndim(v) == 0}
        base_samples, gebm_samples = out["base_samples"], out["gebm_samples"]
        result["mmd_base"] = float(metrics.mmd2(self.reference, base_samples,
                                                bandwidths=self.bandwidths))
        result["mmd_gebm"] = float(metrics.mmd2(self.reference, gebm_samples,
                                                bandwidths=self.bandwidths))
        result["mmd_noise"] = self.mmd_noise
        for name, samples in (("base", base_samples), ("gebm", gebm_samples)):
            for k, v in data.exact_metrics(self.config.data, samples).items():
                result[f"{name}_{k}"] = float(v)
        if self.density is not None:
            result.update(self.density(state))
        if self.write_pictures:
            self._pictures(step, base_samples, gebm_samples, result)
        return result

    def _pictures(self, step: int, base_samples: np.ndarray, gebm_samples: np.ndarray,
                  result: Dict[str, float]) -> None:
        if self.info.kind == "image":
            shown = min(64, base_samples.shape[0])
            outputs.save_image_grid(os.path.join(self.samples_dir, f"base_{step:07d}.png"),
                                    base_samples[:shown])
            outputs.save_image_grid(os.path.join(self.samples_dir, f"gebm_{step:07d}.png"),
                                    gebm_samples[:shown])
        elif self.info.shape in ((2,), (3,)):
            outputs.save_scatter(
                os.path.join(self.samples_dir, f"scatter_{step:07d}.png"),
                {"data (held out)": self.reference, "base": base_samples, "GEBM": gebm_samples},
                title=f"{self.info.name}, base step {step}",
                notes={"data (held out)": f"MMD² noise {self.mmd_noise:.0e}",
                       "base": outputs.mmd_note(result["mmd_base"], self.mmd_noise),
                       "GEBM": outputs.mmd_note(result["mmd_gebm"], self.mmd_noise)})


@functools.lru_cache(maxsize=None)
def _compiled_evaluate(spec: StepSpec, sampler: sampling.SamplerSpec, num_samples: int):
    """jit of _evaluate, cached so equal configs compile once per process."""
    return jax.jit(functools.partial(_evaluate, spec, sampler, num_samples))


def _evaluate(spec: StepSpec, sampler: sampling.SamplerSpec, num_samples: int,
              state: TrainState, heldout: jax.Array, key: jax.Array) -> Dict[str, jax.Array]:
    key_heldout, key_base, key_chains, key_mcmc = jax.random.split(key, 4)
    generator_vars, energy_vars = state.generator_variables(), state.energy_variables()
    # Inference mode: BatchNorm generators use their running averages here (trained in train
    # mode, on batch statistics), as in experiments.sample.
    generate = latent.generator_fn(spec.generator, generator_vars)
    energy = latent.energy_fn(spec.energy, energy_vars, spec.energy_floor)

    z = jax.random.normal(key_heldout, (heldout.shape[0], spec.latent_dim), jnp.float32)
    e_data, e_fake = energy(heldout), energy(generate(z))
    out = {"kale_heldout": kale.estimate(e_data, e_fake),
           "kale_heldout_dual": kale.estimate(e_data, e_fake, state.log_partition)}

    out["base_samples"] = generate(
        jax.random.normal(key_base, (num_samples, spec.latent_dim), jnp.float32))
    model = sampling.Model(spec.generator, spec.energy, spec.latent_dim, spec.energy_floor)
    _, result = sampling.sample_gebm(key_mcmc, model, sampler, generator_vars, energy_vars,
                                     start_key=key_chains, num_chains=num_samples)
    out["gebm_samples"] = generate(result.position)
    out["gebm_acceptance"] = jnp.mean(result.acceptance_rate)
    out["gebm_nonfinite"] = jnp.sum(result.num_nonfinite)
    return out
