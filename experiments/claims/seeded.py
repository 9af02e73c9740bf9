"""Seeded comparisons on sets with a known answer: base vs GEBM (beta = 1 and chosen beta) vs GAN.

For each training seed the shipped config is trained as a GEBM (KALE) and, all else equal, as a
GAN (train.criterion='logistic'); on the curve toy an EBM baseline (configs/ebm.py) too. Each
model is scored on fresh samples by the set's exact metrics (kale_jax.data.exact_metrics) and by
MMD^2 to fresh true samples. GEBM samples come from latent MCMC (the config's sampler) at beta = 1
(the model) and at the beta that is best on VALIDATION chains: independent chains scored against
an independent validation reference, never the test draws that are reported. Across seeds the
section reports each model's mean and standard error, and paired differences (same seed) with
their standard error and z = mean / se.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Sequence

import jax
import numpy as np

from experiments.claims import common

SEEDS = (0, 1, 2)
BETAS = (1.0, 3.0, 10.0, 30.0, 100.0)
NUM_SAMPLES = 2000
TINY = {"train.num_steps": 4, "train.eval_every": 10**9, "train.tensorboard": False,
        "sampler.num_steps": 3, "train.refine_from": None,
        "eval.num_samples": 32, "eval.num_heldout": 32}
_TRAIN_EVAL = {"train.tensorboard": False}

# Per data set: the config, the metric that chooses beta on validation chains, and the exact
# metric of the headline "GEBM better than its base" target.
DATASETS = {
    "ring": {"config": "ring", "select_by": "bin_kl", "headline": "share_within_3std"},
    "grid": {"config": "grid", "select_by": "bin_kl", "headline": "share_within_3std"},
    # More samples on the curve: at 2000, arc_w1 of exact draws scatters by +-0.01 (about 0.035
    # on average), the size of the differences between models.
    "curve": {"config": "curve", "select_by": "arc_w1", "headline": "arc_w1",
              "num_samples": 10000},
    # Fewer samples on images: 1000 give param_w1 a floor of about 0.07 px (shapes.noise_floor).
    "shapes": {"config": "shapes", "select_by": "param_w1", "headline": "param_w1",
               "num_samples": 1000},
}
# Validation and test draws of the true distribution come from separate seeds (sampled sets draw
# independent streams per seed).
_TEST_SEED, _VALIDATION_SEED = 10_000, 20_000


def _config(name: str, seed: int, tiny: bool, criterion: str):
    file = DATASETS[name]["config"]
    if tiny:
        config = common.config_for(f"test:{name}", {**TINY})
        if name == "curve":
            config.model.latent_dim = 1
    else:
        config = common.config_for(file, dict(_TRAIN_EVAL))
    config.seed = seed
    config.train.criterion = criterion
    return config


def _train(name: str, seed: int, tiny: bool, criterion: str, workdir: str,
           log: Callable) -> common.Trained:
    config = _config(name, seed, tiny, criterion)
    suffix = ("" if criterion == "kale" else f"_{criterion}") + ("_tiny" if tiny else "")
    return common.Trained(config, os.path.join(workdir, f"{name}_s{seed}{suffix}"), log=log)


def exact(config, samples: np.ndarray, reference: np.ndarray,
          bandwidths: np.ndarray) -> Dict[str, float]:
    """The set's exact metrics plus MMD^2 to `reference` for `samples` (n, *shape)."""
    from kale_jax import data  # pylint: disable=g-import-not-at-top
    out = {k: float(v) for k, v in data.exact_metrics(config.data, samples).items()}
    out["mmd"] = common.mmd(reference, samples, bandwidths)
    return out


def goal(config, metric: str) -> str:
    from kale_jax import data  # pylint: disable=g-import-not-at-top
    return data.metric_goal(config.data, metric)


def diagnostics(trained: common.Trained, heldout: np.ndarray, key) -> Dict[str, float]:
    """Held-out KALE of the energy against fresh base samples, and the ESS of exp(-E) over them
    (as a fraction of the base samples)."""
    from kale_jax import kale, latent  # pylint: disable=g-import-not-at-top
    energy = jax.jit(latent.energy_fn(trained.spec.energy, trained.state.energy_variables(),
                                      trained.spec.energy_floor))
    e_base = np.asarray(energy(trained.base_samples(key, heldout.shape[0])))
    return {"kale_heldout": float(kale.estimate(energy(heldout), e_base)),
            "ess_fraction": float(kale.effective_sample_size(e_base)) / e_base.shape[0]}


def one_seed(name: str, seed: int, *, tiny: bool, workdir: str, log: Callable,
             betas: Sequence[float], extra_models: Mapping[str, Callable] = None
             ) -> Dict[str, Any]:
    """Trains and scores the models of one seed; returns metrics and the samples (for figures)."""
    from kale_jax import data, sampling  # pylint: disable=g-import-not-at-top
    spec = DATASETS[name]
    gebm = _train(name, seed, tiny, "kale", workdir, log)
    gan = _train(name, seed, tiny, "logistic", workdir, log)
    config = gebm.config
    num = 32 if tiny else spec.get("num_samples", NUM_SAMPLES)
    test = data.eval_examples(config.data, split="test", num_examples=num,
                              seed=_TEST_SEED + seed)
    validation = data.eval_examples(config.data, split="test", num_examples=num,
                                    seed=_VALIDATION_SEED + seed)
    bandwidths = common.mmd_bandwidths(test)
    val_bandwidths = common.mmd_bandwidths(validation)
    key = jax.random.PRNGKey(seed)
    k_base, k_test, k_val, k_diag = jax.random.split(key, 4)

    select_by = spec["select_by"]
    by_beta, val_scores = {}, {}
    for beta in betas:
        samples, result = gebm.gebm_samples(k_val, num, beta=float(beta))
        val_scores[beta] = exact(config, samples, validation, val_bandwidths)[select_by]
        by_beta[beta] = {"validation_" + select_by: val_scores[beta],
                         "validation_acceptance": float(np.mean(result.acceptance_rate))}
    # The validation optimum (non-finite values skipped; beta = 1 if none is finite).
    best = sampling.choose_beta(betas, [val_scores[b] for b in betas], goal(config, select_by))
    chosen = 1.0 if best is None else betas[best]

    samples, models, sampler_info = {}, {}, {}
    samples["base"] = gebm.base_samples(k_base, num)
    for label, beta in (("gebm_beta1", 1.0), ("gebm_chosen", chosen)):
        samples[label], result = gebm.gebm_samples(k_test, num, beta=float(beta))
        sampler_info[label] = {"beta": float(beta),
                               "acceptance": float(np.mean(result.acceptance_rate)),
                               "step_size": float(np.mean(result.step_size)),
                               "num_nonfinite": int(np.sum(result.num_nonfinite))}
    samples["gan"] = gan.base_samples(k_base, num)
    for label, draw in (extra_models or {}).items():
        samples[label] = draw(seed, num)
    samples["truth"] = data.eval_examples(config.data, split="test", num_examples=num,
                                          seed=_TEST_SEED + 500 + seed)
    for label, s in samples.items():
        models[label] = exact(config, s, test, bandwidths)
    heldout = data.eval_examples(config.data, split="test", num_examples=4 * num,
                                 seed=_VALIDATION_SEED + 500 + seed)
    out = {"seed": seed, "chosen_beta": float(chosen), "select_by": select_by,
           "by_beta": {str(b): v for b, v in by_beta.items()}, "models": models,
           "sampler": sampler_info, "diagnostics": diagnostics(gebm, heldout, k_diag),
           "train_seconds": {"gebm": round(gebm.train_seconds, 1),
                             "gan": round(gan.train_seconds, 1)},
           "train_reused": bool(gebm.reused and gan.reused), "workdir": gebm.workdir}
    log(f"{name} seed {seed}: chosen beta {chosen}; " + "; ".join(
        f"{m}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()) for m, r in models.items()))
    return {"result": out, "samples": samples, "trained": gebm}


def _mean_se(values: Sequence[float]) -> Dict[str, float]:
    v = np.asarray(values, np.float64)
    se = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(np.mean(v)), "se": se}


def summarise(config, per_seed: List[Dict[str, Any]], headline: str) -> Dict[str, Any]:
    """Means and standard errors over seeds; paired differences and the headline targets."""
    labels = list(per_seed[0]["models"])
    metrics = list(per_seed[0]["models"]["base"])
    summary = {m: {k: _mean_se([r["models"][m][k] for r in per_seed]) for k in metrics}
               for m in labels}
    paired = {}
    for a, b in (("gebm_beta1", "base"), ("gebm_chosen", "base"), ("gebm_chosen", "gan"),
                 ("gebm_beta1", "gan")) + tuple((m, "gebm_chosen") for m in labels
                                                  if m.startswith("ebm")):
        rows = {}
        for k in metrics:
            d = _mean_se([r["models"][a][k] - r["models"][b][k] for r in per_seed])
            d["z"] = d["mean"] / d["se"] if d["se"] and np.isfinite(d["se"]) else float("nan")
            rows[k] = d
        paired[f"{a}_minus_{b}"] = rows
    better = 1.0 if goal(config, headline) == "max" else -1.0

    def beats(pair: str) -> bool:
        z = paired[pair][headline]["z"]
        return bool(np.isfinite(z) and better * z > 3)

    targets = {f"{pair}_by_3se_on_{headline}": beats(pair)
               for pair in ("gebm_beta1_minus_base", "gebm_chosen_minus_base")}
    return {"summary": summary, "paired": paired, "headline_metric": headline,
            "targets": targets,
            "diagnostics": {k: _mean_se([r["diagnostics"][k] for r in per_seed])
                            for k in per_seed[0]["diagnostics"]}}


def compare(name: str, *, tiny: bool, workdir: str, log: Callable,
            extra_models: Mapping[str, Callable] = None) -> tuple:
    """All seeds of one data set: (section dict, the seed-0 run for figures)."""
    seeds = SEEDS[:1] if tiny else SEEDS
    betas = (1.0, 10.0) if tiny else BETAS
    runs = [one_seed(name, s, tiny=tiny, workdir=workdir, log=log, betas=betas,
                     extra_models=extra_models) for s in seeds]
    per_seed = [r["result"] for r in runs]
    section = {"seeds": list(seeds), "betas": list(betas), "per_seed": per_seed,
               **summarise(runs[0]["trained"].config, per_seed, DATASETS[name]["headline"])}
    return section, runs[0]


def training_curves(workdir: str) -> Dict[str, List[float]]:
    """Evaluation rows of a run's metrics.jsonl: {key: values} with 'step'."""
    from kale_jax.train import outputs  # pylint: disable=g-import-not-at-top
    rows = [r for r in outputs.read_metrics(workdir) if "mmd_base" in r]
    keys = sorted({k for r in rows for k in r})
    return {k: [r.get(k) for r in rows] for k in keys}
