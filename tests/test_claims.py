"""experiments.claims on tiny settings: every claim writes its section of claims.json (keys and
types checked) and its figures; flows.json is folded in; bad input stops with one line.

The claims run in-process, in one module-scoped fixture, so that the tiny trainings compile once
and are reused (samplers and gan read the sphere3d / ring / grid / digits workdirs). The binary
itself is run as a subprocess for the fast paths (flows folding and its errors).
"""
import json
import os
import subprocess
import sys

import pytest

from experiments.claims import runners

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ("sphere3d", "modes", "digits", "samplers", "gan", "kale_vs_kl")
HEADER = {"command": str, "date": str, "seconds": float, "tiny": bool, "paper_claim": str,
          "reproduces": bool, "figures": list}
EVALUATION = {"mmd_base": float, "mmd_gebm": float, "mmd_true_vs_true": float,
              "gebm_acceptance": float, "num_samples": int, "train_steps": int,
              "train_seconds": float, "gebm_closer_than_base": bool, "config": str,
              "overrides": dict}
MODES = {**EVALUATION, "base_share_within_3std": float, "gebm_share_within_3std": float,
         "true_share_within_3std": float, "base_modes_covered": int, "gebm_modes_covered": int,
         "num_modes": int, "gebm_sharper_than_base": bool}
KALE_ROW = {"dim": int, "energy_class": str, "kl": float, "kale": float, "kale_dual": float,
            "standard_error": float, "below_kl": bool}
SAMPLER_CURVE = {"gradient_evaluations": list, "metric": list, "acceptance_rate": float,
                 "num_nonfinite": int}


def _check(section, schema, where):
    for key, kind in schema.items():
        assert key in section, f"{where}: missing {key}"
        value = section[key]
        if kind is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, key)
        else:
            assert isinstance(value, kind), (where, key, type(value))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("results"))
    workdir = str(tmp_path_factory.mktemp("workdirs"))
    for claim in ORDER:
        runners.run(claim, tiny=True, out=out, workdir=workdir, seed=0)
    with open(os.path.join(out, "claims.json")) as f:
        return out, json.load(f)


def test_every_claim_has_a_section_with_figures(run):
    out, results = run
    assert set(ORDER) <= set(results)
    for claim in ORDER:
        _check(results[claim], HEADER, claim)
        assert results[claim]["tiny"] is True
        for name in results[claim]["figures"]:
            assert name.endswith(".png") and os.path.getsize(os.path.join(out, name)) > 0


def test_sphere3d_and_digits(run):
    _, results = run
    _check(results["sphere3d"], {**EVALUATION, "mmd_true_base": float}, "sphere3d")
    _check(results["digits"], EVALUATION, "digits")


def test_modes(run):
    _, results = run
    for name in ("ring", "grid"):
        _check(results["modes"][name], MODES, name)
        assert 0.0 <= results["modes"][name]["gebm_share_within_3std"] <= 1.0
        assert results["modes"][name]["num_modes"] == {"ring": 8, "grid": 25}[name]


def test_kale_vs_kl(run):
    _, results = run
    section = results["kale_vs_kl"]
    assert {r["energy_class"] for r in section["rows"]} == {"quadratic", "linear", "mlp"}
    for row in section["rows"]:
        _check(row, KALE_ROW, "kale_vs_kl row")
        assert row["kl"] > 0 and row["standard_error"] > 0
    _check(section, {"bound_holds": bool, "tight_for_exact_class": bool}, "kale_vs_kl")


def test_samplers(run):
    _, results = run
    for name in ("sphere3d", "ring"):
        curves = results["samplers"][name]
        for kernel in ("ula", "mala", "hmc", "kla"):
            _check(curves[kernel], SAMPLER_CURVE, f"samplers {name} {kernel}")
            assert len(curves[kernel]["metric"]) == len(curves[kernel]["gradient_evaluations"])
            assert curves[kernel]["gradient_evaluations"][-1] == curves["gradient_budget"]
        assert curves["ula"]["acceptance_rate"] == 1.0  # unadjusted
        assert 0.0 <= curves["mala"]["acceptance_rate"] <= 1.0


def test_gan(run):
    _, results = run
    for name in ("ring", "grid", "digits"):
        row = results["gan"][name]
        _check(row, {"kale_mmd_gebm": float, "gan_mmd_base": float, "gebm_better_mmd": bool},
               f"gan {name}")


def _binary(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "experiments.claims", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_flows_json_is_folded_in(tmp_path):
    flows = {"true_test_nll": 1.1, "mle_flow_test_nll": 1.25, "mle_gebm_test_nll": 1.2,
             "gebm_mle_test_nll": 1.15, "kale_gebm_test_nll": 1.3, "dataset": "x"}
    (tmp_path / "flows.json").write_text(json.dumps(flows))
    (tmp_path / "claims.json").write_text(json.dumps({"kale_vs_kl": {"kept": 1}}))
    proc = _binary("--claim=flows", f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "claims.json").read_text())
    assert results["kale_vs_kl"] == {"kept": 1}
    assert {k: results["flows"][k] for k in flows} == flows


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ('{"true_test_nll": 1.0}', "lacks the keys"),
    ('{"true_test_nll": 1, "mle_flow_test_nll": {"a": 1}}', "must be flat"),
    ("[1, 2", "not valid JSON"),
])
def test_bad_flows_json_is_one_line(tmp_path, content, fragment):
    if content is not None:
        (tmp_path / "flows.json").write_text(content)
    proc = _binary("--claim=flows", f"--out={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
