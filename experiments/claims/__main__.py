r"""Reproduces the paper's claims at CPU scale: python -m experiments.claims --claim=NAME.

    python -m experiments.claims --claim=kale_vs_kl   # KALE vs closed-form KL, Gaussians d=1..64
    python -m experiments.claims --claim=sphere3d     # learned vs true GEBM (MMD), 3-D scatter
    python -m experiments.claims --claim=ring         # ring of 8: base / GEBM / GAN, 3 seeds
    python -m experiments.claims --claim=grid         # 5x5 grid: the same
    python -m experiments.claims --claim=curve        # the paper's toy: truth / GAN / GEBM / EBM
    python -m experiments.claims --claim=shapes       # 16x16 discs: base / GEBM / GAN, 3 seeds
    python -m experiments.claims --claim=digits       # digits MMD, image grids
    python -m experiments.claims --claim=samplers     # metric vs gradient evals, ULA/MALA/HMC/KLA
    python -m experiments.claims --claim=gan          # same networks trained as logistic GANs
    python -m experiments.claims --claim=flows        # fold OUT/flows.json into claims.json

Each claim replaces its own section of OUT/claims.json (default experiments/results/claims.json;
command, date and seconds recorded) and writes its PNG figures to OUT. --tiny runs a seconds-
scale setting (tests/test_claims.py). Trained GEBMs go to WORKDIR/<claim>_<data>[_tiny] (default
workdirs/claims) and are reused by later claims when present (e.g. --claim=samplers reads the
seed-0 curve, shapes and ring runs, and the betas those claims chose, so run it after them).

Every claim also folds OUT/flows.json (written by `python -m experiments.flows_vs_mle`) into
claims.json under "flows" when that file exists: a flat JSON object with at least the test NLLs
true_test_nll, mle_flow_test_nll, mle_gebm_test_nll, gebm_mle_test_nll and kale_gebm_test_nll
(nats per example).
"""
import time

from absl import flags, logging

from experiments import cli

CLAIMS = ("kale_vs_kl", "sphere3d", "ring", "grid", "curve", "shapes", "digits", "samplers",
          "gan", "flows")

flags.DEFINE_enum("claim", None, CLAIMS, "Which claim to reproduce.")
flags.DEFINE_bool("tiny", False, "Seconds-scale settings (for tests); numbers are meaningless.")
flags.DEFINE_string("out", "experiments/results", "Directory of claims.json and the figures.")
flags.DEFINE_string("workdir", "workdirs/claims", "Root of the training workdirs.")
flags.DEFINE_integer("seed", 0, "Root seed.")
flags.mark_flags_as_required(["claim"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        from absl import app  # pylint: disable=g-import-not-at-top
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax_logs()
    from experiments.claims import runners  # pylint: disable=g-import-not-at-top
    started = time.monotonic()
    runners.run(FLAGS.claim, tiny=FLAGS.tiny, out=FLAGS.out, workdir=FLAGS.workdir,
                seed=FLAGS.seed, started=started)
    logging.info("claim %s done in %.0f s", FLAGS.claim, time.monotonic() - started)


if __name__ == "__main__":
    cli.run(main)
