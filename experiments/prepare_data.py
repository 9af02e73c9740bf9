r"""Prepares the tfds image set a config trains on, once, before training (no Apache Beam).

    python -m experiments.prepare_data --config=configs/cifar10.py \
        --config.data.data_dir=/data/tfds
    python -m experiments.prepare_data --config=configs/celeba.py \
        --config.data.data_dir=/data/tfds --manual_dir=/data/celeba_files

Prints the set, the splits the config trains and evaluates on, and every source file it will
read from --manual_dir or download (with sizes); then builds the set in config.data.data_dir
(tfds' default, $TFDS_DATA_DIR or ~/tensorflow_datasets, when empty) with tfds' progress bars,
and prints each split's size. A set already prepared is left as it is. Training then reads it
with the same --config.data.data_dir; nothing downloads while training.

--manual_dir (default: config.data.manual_dir) is the directory of source files downloaded by
hand, under tfds' names; CelebA and ImageNet 32x32 need it (kale_jax.data.tfds_prepare lists
the files and where each comes from).

Exit status (experiments/cli.py): 0 prepared (or already prepared); 2 a user error, one line on
stderr: a set that is not a tfds image set, a missing manual file (each named, with where it
comes from), a manual file of the wrong size or checksum, no network for a file to download, a
missing tensorflow-io (LSUN); 1 an internal error, with its traceback.
"""
from absl import app, flags
from ml_collections import config_flags

from experiments import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined when the binary runs (not at import: tests import binaries side by side)."""
    flags.DEFINE_string("manual_dir", None, "Directory of manually downloaded source files "
                        "(default: config.data.manual_dir).")
    config_flags.DEFINE_config_file("config", None, "The training config (configs/*.py) whose "
                                    "config.data names the set.", lock_config=True)
    flags.mark_flags_as_required(["config"])


def run(data_config, manual_dir=None) -> dict:
    """Prepares config.data's set (kale_jax.data.tfds_prepare.prepare); {split: examples}."""
    from kale_jax.data import tfds_prepare  # pylint: disable=g-import-not-at-top
    return tfds_prepare.prepare(data_config, manual_dir=manual_dir,
                                echo=lambda line: print(line, flush=True))


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(FLAGS.config.data, FLAGS.manual_dir)


def main() -> None:
    """Console entry point (kale-prepare): parses the flags and prepares the data set."""
    _define_flags()
    cli.run(_main)


if __name__ == "__main__":
    main()
