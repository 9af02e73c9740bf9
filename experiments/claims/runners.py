"""Dispatch of the claims binary: runs one claim, writes its section and figures."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict

from absl import logging

from experiments.claims import common
from kale_jax.errors import DataError

FLOWS_FILE = "flows.json"
FLOWS_KEYS = ("true_test_nll", "mle_flow_test_nll", "mle_gebm_test_nll", "gebm_mle_test_nll",
              "kale_gebm_test_nll")


def _log(message: str) -> None:
    logging.info(message)
    print(message, flush=True)


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown' elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def environment(load_at_start) -> Dict[str, Any]:
    """What a claim's numbers and times depend on besides the code: the CPU, the JAX devices, the
    XLA flags (conv nets' results change with the device split and XNNPACK) and the 1-minute load
    average at start and end (a wall time is only an idle machine's when both are near the
    claim's own threads)."""
    import jax  # pylint: disable=g-import-not-at-top
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "jax_devices": jax.device_count(),
            "jax_backend": jax.default_backend(),
            "JAX_NUM_CPU_DEVICES": os.environ.get("JAX_NUM_CPU_DEVICES"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
            "load_average_start": round(load_at_start, 2),
            "load_average_end": round(os.getloadavg()[0], 2)}


def fold_flows(out: str) -> bool:
    """Copies OUT/flows.json into claims.json under "flows"; returns whether the file existed.

    Expected format: the flat JSON object `python -m experiments.flows_vs_mle` writes, with at
    least FLOWS_KEYS (test NLLs in nats per example); more keys are kept; values must be
    numbers, strings or booleans.
    """
    path = os.path.join(out, FLOWS_FILE)
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            flows = json.load(f)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error}); rewrite it with the flow "
                        "experiment") from error
    if not isinstance(flows, dict):
        raise DataError(f"{path} must hold a flat JSON object such as "
                        '{"true_test_nll": 3.9, "mle_flow_test_nll": 4.1, ...}, got '
                        f"{type(flows).__name__}")
    nested = sorted(k for k, v in flows.items() if isinstance(v, (dict, list)))
    if nested:
        raise DataError(f"{path} must be flat (numbers, strings, booleans); keys {nested} hold "
                        "objects or lists")
    missing = [k for k in FLOWS_KEYS if k not in flows]
    if missing:
        raise DataError(f"{path} lacks the keys {missing}; expected at least {list(FLOWS_KEYS)}")
    common.update_results(out, "flows", {**flows, "source": FLOWS_FILE})
    return True


def _kale_vs_kl(tiny, out, workdir, seed, started) -> Dict[str, Any]:
    del workdir
    from experiments.claims import kale_vs_kl  # pylint: disable=g-import-not-at-top
    result = kale_vs_kl.run(tiny=tiny, seed=seed, log=_log)
    result["figures"] = [os.path.basename(kale_vs_kl.figure(
        result, os.path.join(out, "kale_vs_kl.png")))]
    return {**common.section_header("kale_vs_kl", tiny, started, kale_vs_kl.PAPER_CLAIM),
            **result}


def _module_claim(module: str, name: str) -> Callable:
    """A runner of claim `name`, the function of that name in experiments.claims.<module>."""
    def run_claim(tiny, out, workdir, seed, started):
        import importlib  # pylint: disable=g-import-not-at-top
        claim = getattr(importlib.import_module(f"experiments.claims.{module}"), name)
        paper_claim, result = claim(tiny=tiny, out=out, workdir=workdir, seed=seed, log=_log)
        return {**common.section_header(name, tiny, started, paper_claim), **result}
    return run_claim


_RUNNERS = {"kale_vs_kl": _kale_vs_kl,
            **{name: _module_claim("gebm", name) for name in ("sphere3d", "digits", "samplers",
                                                             "gan")},
            **{name: _module_claim("known", name) for name in ("ring", "grid", "curve",
                                                              "shapes")}}


def run(claim: str, *, tiny: bool, out: str, workdir: str, seed: int,
        started: float | None = None) -> Dict[str, Any]:
    """Runs `claim`, writes its section of OUT/claims.json; returns the whole file's content."""
    started = time.monotonic() if started is None else started
    load_at_start = os.getloadavg()[0]
    os.makedirs(out, exist_ok=True)
    if claim == "flows":
        if not fold_flows(out):
            raise DataError(f"{os.path.join(out, FLOWS_FILE)} does not exist; the flow-base "
                            "experiment writes it (flat JSON with keys "
                            f"{list(FLOWS_KEYS)})")
        return common.read_results(out)
    section = _RUNNERS[claim](tiny, out, workdir, seed, started)
    section["seconds"] = round(time.monotonic() - started, 1)
    # CPU time of this process (all threads): on a machine shared with other jobs the wall time
    # overstates the cost; on 2 dedicated cores the wall time is at least cpu_seconds / 2.
    section["cpu_seconds"] = round(time.process_time(), 1)
    section["environment"] = environment(load_at_start)
    results = common.update_results(out, claim, section)
    if fold_flows(out):
        results = common.read_results(out)
    return results
