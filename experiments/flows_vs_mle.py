r"""A GEBM with a flow base, trained by KALE or by maximum likelihood, vs the flow alone by MLE.

    python -m experiments.flows_vs_mle --out=experiments/results/flows.json          # full
    python -m experiments.flows_vs_mle --tiny --out=/tmp/flows_tiny.json             # smoke test

Trains configs/tabular_default.py (embedded 4-D 'gaussian_mixture', exact density known) three
times with the same networks, schedule, number of base steps and energy steps:
model.base_objective='mle' (the flow is the model; an energy is trained by KALE on top of it),
'gebm_mle' (the GEBM flow x exp(-E) / Z is the model, fitted by maximum likelihood: KALE energy
steps and base steps on -log g(x) + log mean exp(-E(B(z)))) and 'kale' (the GEBM is the model, the
flow trained by the KALE base step), then writes one flat JSON object (all NLLs in nats per
example, on the whole test / validation split):

  command, tiny, dataset, dim, flow, num_base_steps, batch_size, seed   what was run
  true_test_nll                        -mean log p(x) of the true density on the test split
  mle_flow_test_nll, mle_flow_valid_nll    the MLE flow
  mle_gebm_test_nll                    GEBM on the MLE flow (its energy is trained alongside)
  kale_gebm_test_nll, kale_gebm_valid_nll  the KALE-trained GEBM
  kale_gebm_test_nll_sem               its standard error over test examples
  kale_log_z, kale_log_z_stderr        its Monte-Carlo log Z and delta-method standard error
  kale_log_z_ess                       the effective sample size of log Z's weights exp(-E);
                                       every GEBM NLL is optimistic in expectation (the log of
                                       an unbiased Z estimate; kale_jax.metrics.nll): read it
                                       with these
  kale_base_test_nll                   the KALE-trained flow base alone
  gebm_minus_mle_nats_per_dim          (kale_gebm_test_nll - mle_flow_test_nll) / dim
  target_nats_per_dim, target_met      the claim: GEBM within 0.05 nats/dim of flow-MLE or better
  mle_gebm_minus_mle_nats_per_dim      (mle_gebm_test_nll - mle_flow_test_nll) / dim: the energy
                                       (trained by KALE) on top of the MLE flow
  mle_gebm_target_met                  that difference <= target_nats_per_dim
  gebm_mle_test_nll, gebm_mle_valid_nll    the GEBM trained by joint maximum likelihood
  gebm_mle_test_nll_sem                its standard error over test examples
  gebm_mle_log_z, gebm_mle_log_z_stderr    its Monte-Carlo log Z and delta-method standard error
  gebm_mle_log_z_ess                   the effective sample size of its log Z's weights
  gebm_mle_base_test_nll               its flow base alone
  gebm_mle_minus_mle_nats_per_dim      (gebm_mle_test_nll - mle_flow_test_nll) / dim
  gebm_mle_minus_mle_se, mle_gebm_minus_mle_se   standard error of gebm_mle_test_nll (resp.
                                       mle_gebm_test_nll) - mle_flow_test_nll, nats per example,
                                       paired over the test examples (all runs score the same
                                       points); the log Z error (*_log_z_stderr) is not included
  gebm_mle_target_met                  that difference <= target_nats_per_dim
  gebm_mle_base_ess_median, gebm_mle_base_ess_min   effective sample size of the base step's
                                       weights exp(-E(B(z))), as a fraction of the batch, over the
                                       logged training rows
  kale_error, gebm_mle_error           '' or the error that stopped that run (non-finite
                                       losses); its numbers are then null
  mle_mmd_base, kale_mmd_base, kale_mmd_gebm, gebm_mle_mmd_base, gebm_mle_mmd_gebm   unbiased
                                       MMD^2 between held-out data and samples of the MLE flow /
                                       the KALE flow / the KALE GEBM (latent MCMC) / the gebm_mle
                                       flow / the gebm_mle GEBM
  mle_seconds, kale_seconds, gebm_mle_seconds   wall-clock time of each run (training + eval)

--tiny shrinks networks, steps and evaluation so the command finishes in well under a minute
(its numbers only show the pipeline works). Workdirs go to --workdir (default: a temporary
directory, deleted afterwards).
"""
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from absl import flags, logging

from experiments import cli

flags.DEFINE_bool("tiny", False, "A seconds-long smoke run instead of the full experiment.")
flags.DEFINE_string("out", "experiments/results/flows.json", "Where to write the JSON results.")
flags.DEFINE_string("workdir", None, "Keep the two runs' workdirs here (default: temporary).")
flags.DEFINE_enum("flow", "realnvp", ["realnvp", "maf"], "The flow base.")
flags.DEFINE_integer("num_steps", None, "Override the number of base steps of both runs.")
flags.DEFINE_integer("seed", 0, "The runs' seed.")
FLAGS = flags.FLAGS

TARGET_NATS_PER_DIM = 0.05
OBJECTIVES = ("mle", "gebm_mle", "kale")


def make_config(objective: str, flow: str, tiny: bool, seed: int, num_steps=None):
    """configs/tabular_default.py for `objective` ('kale' | 'mle' | 'gebm_mle'); shrunk when
    `tiny`."""
    from configs import tabular_default  # pylint: disable=g-import-not-at-top
    config = tabular_default.get_config(flow)
    config.seed = seed
    config.model.base_objective = objective
    if tiny:
        config.model.generator_kwargs.num_layers = 2
        config.model.generator_kwargs.hidden = 16
        config.model.energy_kwargs.hidden = 16
        config.train.num_steps = 20
        config.train.batch_size = 64
        config.train.n_critic_warmup = 5
        config.train.a_init_batches = 2
        config.sampler.kernel = "ula"
        config.sampler.num_steps = 2
        config.sampler.num_adaptation_steps = 0
        config.eval.num_heldout = 64
        config.eval.num_samples = 64
        config.eval.nll_base_samples = 2048
    if num_steps is not None:
        config.train.num_steps = num_steps
    config.train.log_every = min(config.train.log_every, config.train.num_steps)
    config.train.eval_every = config.train.num_steps  # evaluate once, at the end
    config.train.checkpoint_every = config.train.num_steps
    return config


def final_eval(workdir: str) -> dict:
    """The last metrics.jsonl row that holds test_nll."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "test_nll" in r][-1]


def training_ess(workdir: str) -> tuple:
    """(median, min) of the logged 'base_ess' of a gebm_mle run's training rows, or Nones."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    ess = sorted(r["base_ess"] for r in rows if "base_ess" in r)
    if not ess:
        return None, None
    return float(np.median(ess)), float(ess[0])


def test_nlls(config, state, log_z: float) -> tuple:
    """Per-example test NLLs (nats) of a trained run: (flow -log g(x), GEBM -log q(x)), each (N,),
    with the GEBM's log Z as evaluated (`log_z` of its metrics row)."""
    # pylint: disable=g-import-not-at-top
    from kale_jax import data
    from kale_jax.metrics import nll
    from kale_jax.train import loop
    spec = loop.step_spec(config, data.get_info(config.data))
    log_g, e = nll.log_probs_and_energies(
        spec.generator, spec.energy, state.generator_variables(), state.energy_variables(),
        data.full_split(config.data, "test"), spec.energy_floor)
    return -log_g, -(log_g - e - log_z)


def paired_se(a, b):
    """Standard error of mean(a) - mean(b) for per-example values on the same points, or None."""
    if a is None or b is None:
        return None
    d = np.asarray(a) - np.asarray(b)
    return float(np.std(d, ddof=1) / np.sqrt(d.size))


def main(argv):
    del argv
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    root = FLAGS.workdir or tempfile.mkdtemp(prefix="flows_vs_mle_")
    results, seconds, configs, errors, ess, per_example = {}, {}, {}, {}, {}, {}
    try:
        for objective in OBJECTIVES:
            config = make_config(objective, FLAGS.flow, FLAGS.tiny, FLAGS.seed, FLAGS.num_steps)
            workdir = os.path.join(root, objective)
            shutil.rmtree(workdir, ignore_errors=True)  # always a fresh run
            started = time.monotonic()
            try:
                state = train_and_evaluate(config, workdir)
                results[objective] = final_eval(workdir)
                per_example[objective] = test_nlls(config, state,
                                                   results[objective]["log_z"])
                if objective == "gebm_mle":
                    ess[objective] = training_ess(workdir)
            except FloatingPointError as error:  # a diverged run is a result, not a crash
                logging.warning("%s run diverged: %s", objective, error)
                errors[objective] = str(error).splitlines()[0]
                results[objective] = {}
            seconds[objective] = time.monotonic() - started
            configs[objective] = config
            logging.info("%s: test_nll=%s (%.0f s)", objective,
                         results[objective].get("test_nll"), seconds[objective])
    finally:
        if FLAGS.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    mle, kale, gebm_mle = results["mle"], results["kale"], results["gebm_mle"]
    config = configs["kale"]
    dim = config.model.latent_dim
    if "mle" in errors:
        raise FloatingPointError(f"the maximum-likelihood run diverged: {errors['mle']}")
    gap = (kale["gebm_test_nll"] - mle["base_test_nll"]) / dim if kale else None
    mle_gap = (mle["gebm_test_nll"] - mle["base_test_nll"]) / dim
    gebm_mle_gap = ((gebm_mle["gebm_test_nll"] - mle["base_test_nll"]) / dim
                    if gebm_mle else None)
    ess_median, ess_min = ess.get("gebm_mle", (None, None))
    mle_flow_nll = per_example["mle"][0]
    gebm_nll = {k: per_example[k][1] if k in per_example else None for k in OBJECTIVES}
    out = {
        "command": "python -m experiments.flows_vs_mle " + " ".join(sys.argv[1:]),
        "tiny": bool(FLAGS.tiny),
        "dataset": config.data.name,
        "dim": dim,
        "flow": FLAGS.flow,
        "num_base_steps": config.train.num_steps,
        "batch_size": config.train.batch_size,
        "seed": FLAGS.seed,
        "true_test_nll": mle.get("true_test_nll"),
        "mle_flow_test_nll": mle["base_test_nll"],
        "mle_flow_valid_nll": mle["base_valid_nll"],
        "mle_gebm_test_nll": mle["gebm_test_nll"],
        "kale_gebm_test_nll": kale.get("gebm_test_nll"),
        "kale_gebm_valid_nll": kale.get("gebm_valid_nll"),
        "kale_gebm_test_nll_sem": kale.get("gebm_test_nll_sem"),
        "kale_log_z": kale.get("log_z"),
        "kale_log_z_stderr": kale.get("log_z_stderr"),
        "kale_log_z_ess": kale.get("log_z_ess"),
        "kale_base_test_nll": kale.get("base_test_nll"),
        "gebm_minus_mle_nats_per_dim": gap,
        "target_nats_per_dim": TARGET_NATS_PER_DIM,
        "target_met": bool(gap is not None and gap <= TARGET_NATS_PER_DIM),
        "mle_gebm_minus_mle_nats_per_dim": mle_gap,
        "mle_gebm_target_met": bool(mle_gap <= TARGET_NATS_PER_DIM),
        "gebm_mle_test_nll": gebm_mle.get("gebm_test_nll"),
        "gebm_mle_valid_nll": gebm_mle.get("gebm_valid_nll"),
        "gebm_mle_test_nll_sem": gebm_mle.get("gebm_test_nll_sem"),
        "gebm_mle_log_z": gebm_mle.get("log_z"),
        "gebm_mle_log_z_stderr": gebm_mle.get("log_z_stderr"),
        "gebm_mle_log_z_ess": gebm_mle.get("log_z_ess"),
        "gebm_mle_base_test_nll": gebm_mle.get("base_test_nll"),
        "gebm_mle_minus_mle_nats_per_dim": gebm_mle_gap,
        "gebm_mle_target_met": bool(gebm_mle_gap is not None
                                    and gebm_mle_gap <= TARGET_NATS_PER_DIM),
        "gebm_mle_minus_mle_se": paired_se(gebm_nll["gebm_mle"], mle_flow_nll),
        "mle_gebm_minus_mle_se": paired_se(gebm_nll["mle"], mle_flow_nll),
        "gebm_mle_base_ess_median": ess_median,
        "gebm_mle_base_ess_min": ess_min,
        "kale_error": errors.get("kale", ""),
        "gebm_mle_error": errors.get("gebm_mle", ""),
        "mle_mmd_base": mle.get("mmd_base"),
        "kale_mmd_base": kale.get("mmd_base"),
        "kale_mmd_gebm": kale.get("mmd_gebm"),
        "gebm_mle_mmd_base": gebm_mle.get("mmd_base"),
        "gebm_mle_mmd_gebm": gebm_mle.get("mmd_gebm"),
        "mle_seconds": seconds["mle"],
        "kale_seconds": seconds["kale"],
        "gebm_mle_seconds": seconds["gebm_mle"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    cli.run(main)
