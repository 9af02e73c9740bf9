r"""Trains a GEBM with KALE: python -m experiments.train --config=configs/default.py --workdir=DIR

Config keys can be overridden on the command line (--config.train.num_steps=10). A workdir that
holds checkpoints is resumed from its latest one. On a multi-host TPU pod pass --distributed so
every host joins the job (jax.distributed.initialize) before any device is used.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard and samples.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host pods).")
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _config_source() -> str:
    """The config file and the command-line overrides, for the checkpoint metadata."""
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    return " ".join([config_flags.get_config_filename(FLAGS["config"])] + overrides)


class _QuietOrbax:
    """Drops orbax's INFO chatter (a dozen lines per save) from the log; its warnings stay."""

    def filter(self, record) -> bool:
        return record.levelno > logging.converter.STANDARD_INFO or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietOrbax())
    import jax  # pylint: disable=g-import-not-at-top  (after flags, so XLA flags apply)
    if FLAGS.distributed:
        jax.distributed.initialize()
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    train_and_evaluate(FLAGS.config, FLAGS.workdir, config_source=_config_source())


if __name__ == "__main__":
    app.run(main)
