r"""Flow base trained by KALE (the GEBM) vs the same flow trained by maximum likelihood.

    python -m experiments.flows_vs_mle --out=experiments/results/flows.json          # full
    python -m experiments.flows_vs_mle --tiny --out=/tmp/flows_tiny.json             # smoke test

Trains configs/tabular_default.py (embedded 4-D 'gaussian_mixture', exact density known) twice
with the same networks, schedule and number of base steps: model.base_objective='mle' (the flow
is the model) and 'kale' (the GEBM flow x exp(-E) / Z is the model), then writes one flat JSON
object (all NLLs in nats per example, on the whole test / validation split):

  command, tiny, dataset, dim, flow, num_base_steps, batch_size, seed   what was run
  true_test_nll                        -mean log p(x) of the true density on the test split
  mle_flow_test_nll, mle_flow_valid_nll    the MLE flow
  mle_gebm_test_nll                    GEBM on the MLE flow (its energy is trained alongside)
  kale_gebm_test_nll, kale_gebm_valid_nll  the KALE-trained GEBM
  kale_gebm_test_nll_sem               its standard error over test examples
  kale_log_z, kale_log_z_stderr        its Monte-Carlo log Z and delta-method standard error
  kale_base_test_nll                   the KALE-trained flow base alone
  gebm_minus_mle_nats_per_dim          (kale_gebm_test_nll - mle_flow_test_nll) / dim
  target_nats_per_dim, target_met      the claim: GEBM within 0.05 nats/dim of flow-MLE or better
  mle_gebm_minus_mle_nats_per_dim      (mle_gebm_test_nll - mle_flow_test_nll) / dim: the energy
                                       (trained by KALE) on top of the MLE flow
  mle_gebm_target_met                  that difference <= target_nats_per_dim
  kale_error                           '' or the error that stopped the KALE run (non-finite
                                       losses); its numbers are then null
  mle_mmd_base, kale_mmd_base, kale_mmd_gebm   unbiased MMD^2 between held-out data and samples
                                       of the MLE flow / the KALE flow / the KALE GEBM (latent MCMC)
  mle_seconds, kale_seconds            wall-clock time of each run (training + evaluation)

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


def make_config(objective: str, flow: str, tiny: bool, seed: int, num_steps=None):
    """configs/tabular_default.py for `objective` ('kale' | 'mle'); shrunk when `tiny`."""
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


def main(argv):
    del argv
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    root = FLAGS.workdir or tempfile.mkdtemp(prefix="flows_vs_mle_")
    results, seconds, configs, errors = {}, {}, {}, {}
    try:
        for objective in ("mle", "kale"):
            config = make_config(objective, FLAGS.flow, FLAGS.tiny, FLAGS.seed, FLAGS.num_steps)
            workdir = os.path.join(root, objective)
            shutil.rmtree(workdir, ignore_errors=True)  # always a fresh run
            started = time.monotonic()
            try:
                train_and_evaluate(config, workdir)
                results[objective] = final_eval(workdir)
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
    mle, kale = results["mle"], results["kale"]
    config = configs["kale"]
    dim = config.model.latent_dim
    if "mle" in errors:
        raise FloatingPointError(f"the maximum-likelihood run diverged: {errors['mle']}")
    gap = (kale["gebm_test_nll"] - mle["base_test_nll"]) / dim if kale else None
    mle_gap = (mle["gebm_test_nll"] - mle["base_test_nll"]) / dim
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
        "kale_base_test_nll": kale.get("base_test_nll"),
        "gebm_minus_mle_nats_per_dim": gap,
        "target_nats_per_dim": TARGET_NATS_PER_DIM,
        "target_met": bool(gap is not None and gap <= TARGET_NATS_PER_DIM),
        "mle_gebm_minus_mle_nats_per_dim": mle_gap,
        "mle_gebm_target_met": bool(mle_gap <= TARGET_NATS_PER_DIM),
        "kale_error": errors.get("kale", ""),
        "mle_mmd_base": mle.get("mmd_base"),
        "kale_mmd_base": kale.get("mmd_base"),
        "kale_mmd_gebm": kale.get("mmd_gebm"),
        "mle_seconds": seconds["mle"],
        "kale_seconds": seconds["kale"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    cli.run(main)
