r"""Trains a GEBM with KALE: python -m experiments.train --config=configs/default.py --workdir=DIR

Installed, the same binary is the console script `kale-train` (any working directory: a
--config=configs/NAME.py that does not exist there is read from the installed package).

Config keys can be overridden on the command line (--config.train.num_steps=10). A workdir that
holds checkpoints is resumed from its latest readable one; SIGTERM (e.g. TPU preemption) or SIGINT
saves a checkpoint and exits with status 0. One run at a time per workdir: a run holds
WORKDIR/.lock, and a second one exits at once (status 2) naming the first.

Exit status (experiments/cli.py): 0 done; 2 a user error (bad config, workdir, data or
checkpoint, or the workdir is in use), printed as one line; 3 training diverged (non-finite loss
or parameters; the last good checkpoint is named and kept); 4 a write to the workdir failed (e.g.
a full disk): one line names what failed, the free space, the last complete checkpoint and how to
resume; 1 an internal error, with its traceback. The log says "Saved checkpoint at step N" only
once step N is committed, and its last line names the last committed checkpoint.

On a multi-host pod run the same command on every host: the job is joined with
jax.distributed.initialize() before any device is used (--distributed=auto tries it and runs as a
single process when no cluster is detected).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard and samples.")
flags.DEFINE_enum("distributed", "auto", ["auto", "yes", "no"],
                  "jax.distributed.initialize(): 'auto' when a cluster is detected, 'yes' always "
                  "(errors if it fails), 'no' never.")
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _config_source() -> str:
    """The config file and the command-line overrides, for the checkpoint metadata."""
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    return " ".join([config_flags.get_config_filename(FLAGS["config"])] + overrides)


def _initialize_distributed(jax) -> None:
    if FLAGS.distributed == "no":
        return
    try:
        jax.distributed.initialize()
    except ValueError as error:  # raised at once when no cluster environment is detected
        if FLAGS.distributed == "yes":
            raise
        logging.info("Single-process run (no cluster detected: %s).", error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax_logs()
    import jax  # pylint: disable=g-import-not-at-top
    _initialize_distributed(jax)
    if jax.process_count() == 1:  # a workdir in use: stop in seconds, before the heavy imports
        from kale_jax import workdir_lock  # pylint: disable=g-import-not-at-top
        workdir_lock.check_free(FLAGS.workdir)
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    cli.log_cpu_devices_hint()
    train_and_evaluate(FLAGS.config, FLAGS.workdir, config_source=_config_source())


def console_main() -> None:
    """The `kale-train` console script (pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
