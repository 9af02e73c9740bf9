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
single process when no cluster is detected). Where the cluster is not detected (e.g. two processes
on one machine, or hosts without a TPU/SLURM/MPI environment), name it on every process:
--coordinator_address=HOST:PORT (process 0's host and a free port), --num_processes=N and
--process_id=I (0 <= I < N), optionally --local_device_ids=0,1. Only process 0 writes metrics,
pictures and config.json and holds the workdir lock; checkpoints are written by all processes
together; a SIGTERM / SIGINT on any process makes every process save the same step and exit 0,
and an error on one process (e.g. process 0's write on a full disk) stops every process at the
same step with that process's exit status.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from kale_jax.errors import UserError

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard and samples.")
flags.DEFINE_enum("distributed", "auto", ["auto", "yes", "no"],
                  "jax.distributed.initialize(): 'auto' when a cluster is detected, 'yes' always "
                  "(errors if it fails), 'no' never.")
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0's coordinator (jax.distributed.initialize); with "
                    "--num_processes and --process_id, instead of auto-detection.")
flags.DEFINE_integer("num_processes", None, "Number of processes of the job (with "
                     "--coordinator_address and --process_id).", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1 (with "
                     "--coordinator_address and --num_processes).", lower_bound=0)
flags.DEFINE_list("local_device_ids", None, "Ids of this process's local devices to use "
                  "(comma-separated, e.g. 0,1; default all).")
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _config_source() -> str:
    """The config file and the command-line overrides, for the checkpoint metadata."""
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    return " ".join([config_flags.get_config_filename(FLAGS["config"])] + overrides)


_JOB_FLAGS = ("coordinator_address", "num_processes", "process_id")


def _distributed_arguments() -> dict:
    """The keyword arguments of jax.distributed.initialize() that the flags give ({} for
    auto-detection); app.UsageError (exit status 2) for a bad combination."""
    given = [name for name in _JOB_FLAGS if FLAGS[name].value is not None]
    named = given + (["local_device_ids"] if FLAGS.local_device_ids is not None else [])
    if FLAGS.distributed == "no" and named:
        raise app.UsageError(f"--{named[0]} names a multi-process job but --distributed=no; drop "
                             "--distributed=no or the job flags")
    if given and len(given) < len(_JOB_FLAGS):
        missing = [f"--{name}" for name in _JOB_FLAGS if name not in given]
        raise app.UsageError(
            f"--{given[0]} needs {' and '.join(missing)} too: pass all of --coordinator_address="
            "HOST:PORT, --num_processes=N and --process_id=I, or none of them (auto-detection)")
    arguments = {}
    if given:
        address = FLAGS.coordinator_address
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise app.UsageError(f"--coordinator_address={address!r} is not HOST:PORT (e.g. "
                                 "10.0.0.1:8476 or localhost:8476)")
        if FLAGS.process_id >= FLAGS.num_processes:
            raise app.UsageError(f"--process_id={FLAGS.process_id} must be below "
                                 f"--num_processes={FLAGS.num_processes} (0 .. "
                                 f"{FLAGS.num_processes - 1})")
        arguments.update(coordinator_address=address, num_processes=FLAGS.num_processes,
                         process_id=FLAGS.process_id)
    if FLAGS.local_device_ids is not None:
        try:
            ids = [int(i) for i in FLAGS.local_device_ids]
        except ValueError:
            ids = []
        if not ids or min(ids) < 0:
            raise app.UsageError(f"--local_device_ids={','.join(FLAGS.local_device_ids)} must be "
                                 "non-negative integers separated by commas, e.g. 0,1")
        arguments["local_device_ids"] = ids
    return arguments


def _initialize_distributed(jax) -> None:
    """Joins the job: named by the flags, auto-detected, or none (a single process)."""
    if FLAGS.distributed == "no":
        return
    arguments = _distributed_arguments()
    if "coordinator_address" in arguments:  # a job named on the command line: it must form
        try:
            jax.distributed.initialize(**arguments)
        except Exception as error:  # pylint: disable=broad-except
            raise UserError(
                f"process {arguments['process_id']} of {arguments['num_processes']} could not "
                f"join the job at --coordinator_address={arguments['coordinator_address']}: "
                f"{' '.join(str(error).split())[:300]}; start every process with the same "
                "--coordinator_address (process 0's host and a free port) and --num_processes, "
                "and a distinct --process_id") from error
        return
    try:
        jax.distributed.initialize(**arguments)
    except ValueError as error:  # raised at once when no cluster environment is detected
        if FLAGS.distributed == "yes":
            raise
        if arguments:
            raise app.UsageError(
                "--local_device_ids is for a job of several processes, but none was detected "
                f"({error}); name the job with --coordinator_address, --num_processes and "
                "--process_id, or drop --local_device_ids") from error
        logging.info("Single-process run (no cluster detected: %s).", error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _distributed_arguments()  # bad job flags stop here, before jax is imported
    cli.quiet_orbax_logs()
    import jax  # pylint: disable=g-import-not-at-top
    _initialize_distributed(jax)
    if jax.process_count() == 1:  # a workdir in use: stop in seconds, before the heavy imports
        from kale_jax import workdir_lock  # pylint: disable=g-import-not-at-top
        workdir_lock.check_free(FLAGS.workdir)
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    if jax.process_count() == 1:  # its advice (more CPU devices per process) is for one process
        cli.log_cpu_devices_hint()
    train_and_evaluate(FLAGS.config, FLAGS.workdir, config_source=_config_source())


def console_main() -> None:
    """The `kale-train` console script (pyproject.toml)."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
