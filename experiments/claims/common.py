"""Shared pieces of the claims binary: the results file, figures, training and GEBM sampling.

Results live in one JSON file, OUT/claims.json, one section per claim (read-modify-write under a
file lock, so claims run in parallel processes do not overwrite each other). Every section records
the command that wrote it, the UTC date, the wall-clock seconds, whether it was a --tiny run, the
paper's claim in words and whether our measurement agrees.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

RESULTS_FILE = "claims.json"


# ------------------------------------------------------------------------------- results file
@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(os.path.join(os.path.dirname(path), ".claims.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _plain(value: Any) -> Any:
    """numpy / jax scalars and arrays -> JSON types; non-finite floats -> None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) or (hasattr(value, "dtype") and np.ndim(value) == 0):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):
        return _plain(np.asarray(value).tolist())
    return value


def read_results(out_dir: str) -> Dict[str, Any]:
    path = os.path.join(out_dir, RESULTS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_results(out_dir: str, key: str, section: Mapping[str, Any]) -> Dict[str, Any]:
    """Replaces section `key` of OUT/claims.json (other sections are kept); returns the file."""
    path = os.path.join(out_dir, RESULTS_FILE)
    with _locked(path):
        results = read_results(out_dir)
        results[key] = _plain(section)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(sorted(results.items())), f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    return results


def command_line() -> str:
    """The command as typed (python -m experiments.claims ...)."""
    return "python -m experiments.claims " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def section_header(claim: str, tiny: bool, started: float, paper_claim: str) -> Dict[str, Any]:
    return {"command": command_line(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(time.monotonic() - started, 1),
            "tiny": bool(tiny),
            "paper_claim": paper_claim}


# ------------------------------------------------------------------------------------- figures
def pyplot():
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    return plt


def save_figure(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return path


# --------------------------------------------------------------------------- trained GEBMs
def config_for(name: str, overrides: Mapping[str, Any]):
    """configs/<name>.py's get_config() with dotted-key overrides applied."""
    import importlib  # pylint: disable=g-import-not-at-top
    module, _, arg = name.partition(":")
    get = importlib.import_module(f"configs.{module}").get_config
    config = get(arg) if arg else get()
    for dotted, value in overrides.items():
        node = config
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[part]
        if isinstance(value, dict):
            import ml_collections  # pylint: disable=g-import-not-at-top
            value = ml_collections.ConfigDict(value)
        node[parts[-1]] = value
    return config


class Trained:
    """A trained GEBM: the config, the networks and one copy of the final state.

    Trained with kale_jax.train.train_and_evaluate into `workdir`; a workdir that already holds
    the final checkpoint of the same config is resumed (no training), so claims reuse each other's
    runs (the samplers claim reads the seed-0 curve, shapes and ring workdirs).
    """

    def __init__(self, config, workdir: str, log: Callable[[str], None] = print):
        from kale_jax import data  # pylint: disable=g-import-not-at-top
        from kale_jax.train import loop, train_and_evaluate  # pylint: disable=g-import-not-at-top
        self.config = config
        self.workdir = workdir
        self.info = data.get_info(config.data)
        self.spec = loop.step_spec(config, self.info)
        self.state, self.reused, self.train_seconds = train_once(
            lambda: train_and_evaluate(config, workdir, config_source="experiments.claims"),
            workdir, log, f"{config.data.name} ({config.train.criterion})")

    def base_samples(self, key, num: int) -> np.ndarray:
        import jax  # pylint: disable=g-import-not-at-top
        z = jax.random.normal(key, (num, self.spec.latent_dim))
        return np.asarray(_generate(self.spec, self.state.generator_variables(), z))

    def gebm_samples(self, key, num: int, *, kernel: Optional[str] = None,
                     num_steps: Optional[int] = None, thin: Optional[int] = None, **options):
        """MCMC in latent space (kale_jax.sampling.sample_gebm, one key split into the starts'
        and the chains').

        Sampler settings default to the config's `sampler` block; keyword options override them
        (a `kernel` override drops the options that kernel does not read).
        Returns (samples (num, ...) of the final positions, the SampleResult).
        """
        from kale_jax import sampling  # pylint: disable=g-import-not-at-top
        settings = self.config.sampler.to_dict()
        settings.update(options)
        if num_steps is not None:
            settings["num_steps"] = num_steps
        spec = sampling.from_config(settings)
        if kernel is not None:
            spec = spec.with_kernel(kernel)
            spec.validate("config.sampler")
        result = _sample(self.model, spec, thin, num, self.state.generator_variables(),
                         self.state.energy_variables(), key)
        return np.asarray(_generate(self.spec, self.state.generator_variables(),
                                    result.position)), result

    @property
    def model(self):
        """The GEBM's networks as a kale_jax.sampling.Model."""
        from kale_jax import sampling  # pylint: disable=g-import-not-at-top
        return sampling.Model(self.spec.generator, self.spec.energy, self.spec.latent_dim,
                              self.spec.energy_floor)

    def decode(self, z) -> np.ndarray:
        return np.asarray(_generate(self.spec, self.state.generator_variables(), z))


def train_once(train: Callable[[], Any], workdir: str, log: Callable[[str], None],
               label: str) -> tuple:
    """Runs `train()`, which trains into `workdir` or, when it holds the final checkpoint,
    resumes it and returns at once. The first training's wall and CPU seconds go to
    WORKDIR/claims_train_seconds.json, so a reuse reports the original training's.

    Returns:
      (train()'s result, whether the training was reused, its wall seconds).
    """
    reused = _read_train_seconds(workdir) is not None
    wall, cpu = time.monotonic(), time.process_time()
    result = train()
    if not reused:
        with open(os.path.join(workdir, "claims_train_seconds.json"), "w") as f:
            json.dump({"seconds": time.monotonic() - wall,
                       "cpu_seconds": time.process_time() - cpu}, f)
    seconds = _read_train_seconds(workdir)
    log(f"{label}: {'reused' if reused else 'trained'} in {seconds:.0f} s ({workdir})")
    return result, reused, seconds


def _read_train_seconds(workdir: str) -> Optional[float]:
    path = os.path.join(workdir, "claims_train_seconds.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(json.load(f)["seconds"])


def _generate(spec, generator_variables, z):
    return _jit_generate(spec)(generator_variables, z)


_JITS: Dict[Any, Any] = {}


def _jit_generate(spec):
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import latent  # pylint: disable=g-import-not-at-top
    key = ("generate", spec)
    if key not in _JITS:
        _JITS[key] = jax.jit(lambda v, z: latent.generator_fn(spec.generator, v)(z))
    return _JITS[key]


def _sample(model, spec, thin, num, generator_variables, energy_variables, key):
    """sampling.sample_gebm, jit-compiled once per (model, spec, thin, num)."""
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    cache_key = ("sample", model, spec, thin, num)
    if cache_key not in _JITS:
        def run(gv, ev, k):
            return sampling.sample_gebm(k, model, spec, gv, ev, num_chains=num, thin=thin)[1]
        _JITS[cache_key] = jax.jit(run)
    return _JITS[cache_key](generator_variables, energy_variables, key)


def mmd_bandwidths(reference: np.ndarray) -> np.ndarray:
    """kale_jax.metrics.reference_bandwidths: one fixed kernel from reference samples alone."""
    from kale_jax import metrics  # pylint: disable=g-import-not-at-top
    return metrics.reference_bandwidths(reference)


def mmd(reference: np.ndarray, samples: np.ndarray, bandwidths: np.ndarray) -> float:
    from kale_jax import metrics  # pylint: disable=g-import-not-at-top
    return float(metrics.mmd2(reference, samples, bandwidths=bandwidths))
