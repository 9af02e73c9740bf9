"""The run around a trainer: workdir lock, checkpoints, the step loop, logging, faults.

One skeleton serves the GEBM run (loop.train_and_evaluate) and the EBM baseline's
(ebm_loop.train_ebm); what differs between them is a trainer, an evaluator and a RunSpec.

A trainer provides:
  parallel                  its parallel.DataParallel;
  init_state()              a fresh replicated state;
  abstract_state()          one copy's shapes, dtypes and restore shardings (for checkpoints);
  run_iteration(state, step, batches) -> (state, device metrics)
                            training iteration `step` (0-based), drawing its data batches from
                            the iterator `batches`;
  host_metrics(metrics)     device metrics -> {name: float}.
An evaluator is a callable (one copy of the state, step) -> {name: float} that may draw pictures.

Order of a run (`run`): the workdir lock is checked, the trainer and evaluator are built (bad
settings fail before anything is compiled or written), the workdir is created and locked; then
`_train`: resume from the newest readable checkpoint (or start fresh), write config.json, open the
metric writer, iterate with logging, finiteness checks, evaluation and checkpoint cadence, save on
SIGTERM / SIGINT (at a step boundary every process agrees on: kale_jax.train.stop), and end with
one line naming the last committed checkpoint (a run of several processes first logs each
process's state fingerprint). Tests' fault injection (config.debug) wraps the iteration
(kale_jax.train.faults).

Failures in a run of several processes: one process alone raising (process 0's write of a
metrics row on a full disk) would leave the others waiting in the next collective until jax
aborts them. So inside the loop such an error (storage.WriteFailed or a UserError) is held
(`stop.fail`): the failing process writes nothing more and evaluates no more, but keeps taking
part in the steps until the processes agree (one or two boundaries later, and always before a
collective save, which every process enters or none) and all leave at the same boundary; the
failing process then raises its error (exit status 4 for a write), the others JobFailedError
naming it, with the same exit status. One process raises at once, as it always has.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from kale_jax import checkpoint as checkpoint_lib
from kale_jax import data, storage, workdir_lock
from kale_jax.errors import (CheckpointError, JobFailedError, NonFiniteError, StorageError,
                             UserError)
from kale_jax.train import faults, outputs, parallel
from kale_jax.train import stop as stop_lib
from kale_jax.train import validate as validate_lib

CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one kind of run brings to the shared skeleton besides its trainer and evaluator.

    Attributes:
      format: the checkpoint metadata's "format" entry (the state's class).
      start: (config, one copy of the state) -> (step reached, data batch to start from); raises
        ConfigError when the state cannot continue under the config.
      poison: state -> the state with NaN parameters (config.debug.nan_at_step, train.faults).
      final_eval_key: a metric every evaluation writes (a resumed run whose metrics.jsonl has it
        at the last step does not evaluate again).
      resume_keys: the config entries a checkpoint must agree on (validate.against_checkpoint).
      fresh_line: log line of a fresh start; %-fields workdir, num_steps, devices, parallel.
      resume_line: log line of a resume; %-fields step, directory, num_steps, devices, parallel.
      step_word: what a step is called in error messages ("base step").
      steps_done: what the steps are called in the last line ("base steps").
      checked: what the finiteness check reads ("parameters").
      diverge_hint: the settings to change after a divergence, named in its error.
    """
    format: str
    start: Callable[[ml_collections.ConfigDict, Any], Tuple[int, int]]
    poison: Callable[[Any], Any]
    final_eval_key: str
    resume_keys: Sequence[str]
    fresh_line: str
    resume_line: str
    step_word: str
    steps_done: str
    checked: str
    diverge_hint: str


def run(config: ml_collections.ConfigDict, workdir: str, spec: RunSpec,
        make_trainer: Callable[[], Any], make_evaluator: Callable[[Any], Callable], *,
        config_source: Optional[str] = None) -> Any:
    """Trains and evaluates with the trainer of `make_trainer`; resumes from `workdir`.

    Args:
      config: the full config (validated by the trainer's constructor).
      workdir: output directory (checkpoints/, metrics.jsonl, TensorBoard events, samples/,
        config.json); a workdir with checkpoints is resumed from its latest readable one.
      spec: the run's kind (RunSpec).
      make_trainer: () -> trainer; validates the config before anything is compiled.
      make_evaluator: trainer -> evaluator, built before anything is compiled.
      config_source: how the config was given, recorded in the checkpoint metadata.
    Returns:
      the final state, one copy (DataParallel.unreplicate).
    """
    if jax.process_count() == 1:  # a workdir in use stops us before anything slow is built
        workdir_lock.check_free(workdir)
    trainer = make_trainer()
    validate_lib.workdir(workdir)
    # Built before anything is compiled, so bad evaluation settings fail early too.
    evaluator = make_evaluator(trainer)
    make_workdir(workdir)
    with workdir_lock.hold(workdir):  # before anything in the workdir is read or written
        return _train(config, workdir, spec, trainer, evaluator, config_source)


def _train(config: ml_collections.ConfigDict, workdir: str, spec: RunSpec, trainer: Any,
           evaluator: Callable, config_source: Optional[str]) -> Any:
    """`run` once the config is checked and the workdir locked."""
    num_steps = config.train.num_steps
    is_lead = jax.process_index() == 0
    metadata = {"config": json.loads(config.to_json_best_effort()),
                "config_source": config_source or "", "format": spec.format}
    checkpoints = checkpoint_lib.Checkpoints(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.train.keep_checkpoints,
        metadata=metadata)
    where = {"workdir": workdir, "num_steps": num_steps,
             "devices": trainer.parallel.num_devices, "parallel": config.parallel}
    try:  # checks of the checkpoint come before anything else is written to the workdir
        latest = checkpoints.latest_step()
        if latest is None:
            logging.info(spec.fresh_line % where)
            state = trainer.init_state()
        else:
            validate_lib.against_checkpoint(
                config, checkpoints.step_metadata(latest) or checkpoints.metadata(),
                directory=checkpoints.directory, keys=spec.resume_keys)
            latest, restored, skipped = checkpoints.restore_newest_readable(
                trainer.abstract_state(), is_good=checkpoint_lib.all_finite)
            for bad, reason in skipped:
                logging.warning("Checkpoint step %d in %s is unreadable (%s); moved it to %s and "
                                "using step %d.", bad, checkpoints.directory, reason,
                                checkpoints.directory + checkpoint_lib.UNREADABLE_SUFFIX, latest)
            logging.info(spec.resume_line % dict(where, step=latest,
                                                 directory=checkpoints.directory))
            state = trainer.parallel.replicate(restored)
        step, data_step = spec.start(config, trainer.parallel.local_copy(state))
    except BaseException:
        checkpoints.close()
        raise
    writer = None
    stop = stop_lib.StopSignal(trainer.parallel.mesh)  # agreed by every process of a pod
    iterate = faults.install(config, trainer.run_iteration, spec.poison)  # tests' faults

    def diverged(what: str) -> NonFiniteError:
        checkpoints.wait()  # the last good checkpoint is the last committed one
        return NonFiniteError(
            f"{what}. Last good checkpoint: "
            f"{describe(checkpoints.committed_step, checkpoints.directory)}; "
            f"rerunning with this --workdir resumes from it ({spec.diverge_hint}, or it may "
            "diverge again)")

    def check_finite(at: int, what: str) -> None:
        if not checkpoint_lib.all_finite(trainer.parallel.local_copy(state)):
            raise diverged(f"non-finite {spec.checked} at {spec.step_word} {at}; {what}")

    several = jax.process_count() > 1
    held = []  # this process's error, held until every process agrees to stop (several only)

    @contextlib.contextmanager
    def sharing_failure(at: int):
        """Within: a write failure or user error is raised (one process), or held and signalled
        to the others (several processes: see the module docstring)."""
        try:
            yield
        except (storage.WriteFailed, UserError) as error:
            if not several:
                raise
            if not held:
                held.append(error)
                status = (StorageError.exit_status if isinstance(error, storage.WriteFailed)
                          else getattr(error, "exit_status", 2))
                stop.fail(status)
                logging.warning("Process %d failed at step %d (exit status %d): stopping every "
                                "process at the next step boundary they agree on.",
                                jax.process_index(), at, status)

    def save(at: int) -> None:
        with sharing_failure(at):
            check_finite(at, "not saved")
        if several and stop.agree():  # every process enters a collective save, or none does
            return
        with sharing_failure(at):
            checkpoints.save(at, trainer.parallel.unreplicate(state), metadata=metadata)

    def job_failed(at: int) -> JobFailedError:
        """The error of a process that stops because another one failed (stop.failed)."""
        process, status = stop.failed
        with contextlib.suppress(storage.WriteFailed):
            checkpoints.wait()  # committed, or discarded
        return JobFailedError(
            f"process {process} of {jax.process_count()} failed with exit status {status} "
            f"({JobFailedError.MEANING.get(status, 'see its log')}); this process stopped with "
            f"it at step {at}. Last complete checkpoint: "
            f"{describe(checkpoints.committed_step, checkpoints.directory)}. Process {process}'s "
            "error line names the cause and the fix; then rerun the same command on every "
            "process: it resumes from there", status)

    def evaluate_now(at: int) -> Dict[str, float]:
        check_finite(at, "not evaluated")
        started = time.monotonic()
        results = evaluator(trainer.parallel.local_copy(state), at)
        results["eval_seconds"] = time.monotonic() - started
        progress.pause(results["eval_seconds"])
        logging.info("eval at step %d: %s", at,
                     " ".join(f"{k}={v:.4g}" for k, v in results.items()))
        writer.write(at, results)
        writer.write_pictures(at, os.path.join(workdir, outputs.SAMPLES_DIR))
        writer.flush()
        return results

    results = None
    try:
        with stop_on_write_failure(workdir, checkpoints):
            with sharing_failure(step):  # process 0 alone writes these
                if is_lead:
                    storage.write_atomically(os.path.join(workdir, "config.json"),
                                             config.to_json_best_effort(indent=2),
                                             what="config.json")
                writer = outputs.MetricWriter(
                    workdir, tensorboard=config.train.get("tensorboard", True), enabled=is_lead)
                # Records after the checkpoint (all of them on a fresh start) are from an attempt
                # that stopped before saving; the steps will be logged again.
                writer.truncate_after(latest or 0)
                writer.write_config(latest or 0, config.to_json_best_effort(indent=2))
            batches = data.train_batches(
                config.data, batch_size=config.train.batch_size, seed=config.seed,
                start_step=data_step, process_index=jax.process_index(),
                process_count=jax.process_count())
            progress = outputs.Progress(step, num_steps)
            stop.install()
            while step < num_steps:
                state, step_metrics = iterate(state, step, batches)
                step += 1
                with sharing_failure(step):
                    checkpoints.poll()  # a save that failed in the background stops the run here
                stopping = stop.poll()  # the same answer on every process
                if stop.failed:
                    break  # a process failed: every process leaves at this boundary
                if not held and (step % config.train.log_every == 0 or step == num_steps
                                 or stopping):
                    with sharing_failure(step):
                        scalars = trainer.host_metrics(step_metrics)
                        bad = sorted(k for k, v in scalars.items() if not np.isfinite(v))
                        if bad:
                            raise diverged(f"non-finite {bad} at {spec.step_word} {step}")
                        text, rate = progress.line(step, scalars)
                        logging.info(text)
                        scalars["steps_per_sec"] = rate
                        writer.write(step, scalars)
                if stopping:
                    break  # save below at once: preemption leaves little time for evaluation
                if not held and (step % config.train.eval_every == 0 or step == num_steps):
                    with sharing_failure(step):
                        results = evaluate_now(step)
                if step % config.train.checkpoint_every == 0 or step == num_steps:
                    save(step)
                    if stop.failed:
                        break
            if stop.stopping and not stop.failed:
                save(step)
            if several:
                stop.agree()  # a failure held at the last boundary (its save included)
            if stop.failed:
                raise held[0] if held else job_failed(step)
            if not stop.stopping and results is None and not _has_final_eval(
                    workdir, num_steps, spec.final_eval_key):
                results = evaluate_now(num_steps)  # resumed a run stopped before its last eval
            checkpoints.wait()
            writer.close()
        if jax.process_count() > 1:  # every process's copy of the state must be the same
            logging.info("Process %d/%d: state fingerprint %s at step %d.", jax.process_index(),
                         jax.process_count(),
                         parallel.fingerprint(trainer.parallel.local_copy(state)), step)
        committed = describe(checkpoints.committed_step, checkpoints.directory)
        if stop.stopping:
            logging.warning("Stopped by signal at step %d after saving a checkpoint; last "
                            "committed checkpoint: %s; rerun with the same workdir to resume.",
                            step, committed)
        else:
            logging.info("Final metrics: %s",
                         " ".join(f"{k}={v:.4g}" for k, v in (results or {}).items()))
            logging.info("Finished %d %s; last committed checkpoint: %s.", num_steps,
                         spec.steps_done, committed)
    finally:
        stop.uninstall()
        close_quietly(checkpoints, writer)
    return trainer.parallel.unreplicate(state)


def make_workdir(workdir: str) -> None:
    """Creates `workdir` (CheckpointError, exit status 2, when it cannot be)."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"--workdir={workdir} cannot be created: {error}") from error


@contextlib.contextmanager
def stop_on_write_failure(workdir: str, checkpoints: checkpoint_lib.Checkpoints):
    """Within: a failed write (storage.WriteFailed) stops the run with StorageError (exit
    status 4), whose one line names what failed, the free space left, the last complete
    checkpoint (a save still pending is waited for first) and how to resume."""
    try:
        yield
    except storage.WriteFailed as failure:
        storage.simulate_full_disk(False)
        with contextlib.suppress(storage.WriteFailed):
            checkpoints.wait()  # committed, or discarded (the disk is full for it too)
        raise storage.run_stopped(failure, workdir=os.path.abspath(workdir),
                                  checkpoint_dir=checkpoints.directory,
                                  committed_step=checkpoints.committed_step) from failure
    finally:
        storage.simulate_full_disk(False)


def close_quietly(checkpoints: checkpoint_lib.Checkpoints,
                  writer: Optional[outputs.MetricWriter]) -> None:
    """Closes a run's outputs on its way out. A run that ends normally has flushed them already;
    one stopped by an error reports that error, so a further write failure here is one warning
    line."""
    for close in (checkpoints.close, writer.close if writer is not None else None):
        if close is None:
            continue
        try:
            close()
        except storage.WriteFailed as failure:
            logging.warning("While stopping: %s", failure)


def describe(step: Optional[int], directory: str) -> str:
    """A checkpoint for messages: "step N in DIRECTORY", or "none"."""
    return "none" if step is None else f"step {step} in {directory}"


def _has_final_eval(workdir: str, step: int, key: str) -> bool:
    path = os.path.join(workdir, outputs.METRICS_FILE)
    return os.path.exists(path) and any(
        r["step"] == step and key in r for r in outputs.read_metrics(workdir))
