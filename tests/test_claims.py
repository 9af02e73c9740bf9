"""experiments.claims on tiny settings: every claim writes its section of claims.json and its
figures, the numbers in the sections obey the rules their docstrings state (truth rows score as
the truth, chosen betas are the validation optimum, paired differences are per-seed means, the
sampler curves share their start and spend the same gradient budget), the report prints them;
flows.json is folded in; bad input stops with one line.

The claims run in-process, in one module-scoped fixture, in an order that lets later claims reuse
earlier tiny trainings (samplers reads the ring and curve workdirs, gan the digits one). The
binary itself is run as a subprocess for the fast paths (flows folding and its errors).
"""
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.claims import common, gebm, report, runners, seeded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHAPES = ("shapes",) if "shapes" in runners._RUNNERS else ()  # pylint: disable=protected-access
ORDER = ("sphere3d", "ring", "grid", "curve", *_SHAPES, "digits", "samplers", "gan",
         "kale_vs_kl")
SEEDED = ("ring", "grid", "curve", *_SHAPES)
HEADER = {"command": str, "date": str, "seconds": float, "tiny": bool, "paper_claim": str,
          "reproduces": bool, "figures": list}
EVALUATION = {"mmd_base": float, "mmd_gebm": float, "mmd_true_vs_true": float,
              "gebm_acceptance": float, "num_samples": int, "train_steps": int,
              "train_seconds": float, "gebm_closer_than_base": bool, "config": str,
              "overrides": dict}
KALE_ROW = {"dim": int, "energy_class": str, "kl": float, "kale": float, "kale_dual": float,
            "standard_error": float, "below_kl": bool}


def _check(section, schema, where):
    for key, kind in schema.items():
        assert key in section, f"{where}: missing {key}"
        value = section[key]
        if kind is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, key)
        else:
            assert isinstance(value, kind), (where, key, type(value))


def _goal(name, metric):
    from kale_jax import data  # pylint: disable=g-import-not-at-top
    return data.metric_goal({"name": name}, metric)


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
        assert results[claim]["figures"], claim
        for name in results[claim]["figures"]:
            assert name.endswith(".png") and os.path.getsize(os.path.join(out, name)) > 0
        environment = results[claim]["environment"]
        assert environment["jax_devices"] == jax.device_count(), claim
        assert environment["cores"] == os.cpu_count() and environment["load_average_end"] >= 0


def test_sphere3d_and_digits(run):
    _, results = run
    _check(results["sphere3d"], {**EVALUATION, "mmd_true_base": float}, "sphere3d")
    _check(results["digits"], EVALUATION, "digits")
    for claim in ("sphere3d", "digits"):
        r = results[claim]
        assert r["gebm_closer_than_base"] == (r["mmd_gebm"] < r["mmd_base"]), claim
    # Two independent true sets: the unbiased MMD^2 has mean 0 and, with kernel values in [0, 1]
    # (so |h| <= 2 in the U-statistic), variance <= 2 E[h^2] / (m (m - 1)) <= 8 / (m (m - 1))
    # for m points a set; a mean over `repeats` sets only shrinks it. 5 of those standard errors.
    r = results["sphere3d"]
    m = r["num_samples"]
    assert abs(r["mmd_true_vs_true"]) <= 5 * math.sqrt(8.0 / (m * (m - 1))), r


def test_truth_rows_score_as_the_truth(run):
    _, results = run
    # Ring and grid: a true sample lies within 3 std of its mode with probability
    # P(chi^2_2 <= 9) = 1 - exp(-4.5) = 0.98889, so among the 32 tiny draws the number outside is
    # Binomial(32, 0.01111) (mean 0.36): P(>= 5 outside) = 2.7e-5, hence share >= 28 / 32. A ring
    # mode gets no high-quality draw with probability (1 - 0.98889 / 8)^32 = 0.015; three given
    # modes with (1 - 3 * 0.98889 / 8)^32 = 3.6e-7, so P(>= 3 of 8 missed) <= 56 * 3.6e-7 = 2e-5.
    for name in ("ring", "grid"):
        truth = results[name]["per_seed"][0]["models"]["truth"]
        assert 28 / 32 <= truth["share_within_3std"] <= 1.0, (name, truth)
    assert results["ring"]["per_seed"][0]["models"]["truth"]["modes_covered"] >= 6
    # The curve's true draws lie exactly on the curve (data.noise = 0): the distance is float32
    # rounding of coordinates of size <= 3 (~4e-7) plus the projection's tolerance.
    truth = results["curve"]["per_seed"][0]["models"]["truth"]
    assert 0.0 <= truth["curve_distance"] < 1e-5
    assert truth["on_curve_share"] == 1.0


def _nan(value):
    """JSON null (a non-finite number, see common._plain) as NaN."""
    return math.nan if value is None else value


def test_chosen_beta_is_the_validation_optimum(run):
    _, results = run
    for name in SEEDED:
        section = results[name]
        for r in section["per_seed"]:
            metric = r["select_by"]
            sign = 1.0 if _goal(name, metric) == "min" else -1.0
            values = [sign * _nan(r["by_beta"][str(float(b))]["validation_" + metric])
                      for b in section["betas"]]
            # The first minimum of the finite values; beta = 1 if none is finite (a tiny shapes
            # model draws no valid disc, and param_w1 of no valid disc is undefined).
            finite = [i for i, v in enumerate(values) if math.isfinite(v)]
            expected = (section["betas"][min(finite, key=lambda i: values[i])] if finite
                        else 1.0)
            assert r["chosen_beta"] in section["betas"], name
            assert r["chosen_beta"] == expected, (name, values)
            assert r["sampler"]["gebm_chosen"]["beta"] == r["chosen_beta"]
            assert r["sampler"]["gebm_beta1"]["beta"] == 1.0


def test_summaries_and_paired_differences_are_per_seed_statistics(run):
    _, results = run
    for name in SEEDED:
        section = results[name]
        per_seed = section["per_seed"]
        assert [r["seed"] for r in per_seed] == section["seeds"]
        for model, row in section["summary"].items():
            for metric, stats in row.items():
                values = [_nan(r["models"][model][metric]) for r in per_seed]
                assert _nan(stats["mean"]) == pytest.approx(np.mean(values), rel=1e-12,
                                                            abs=1e-12, nan_ok=True)
        for pair, row in section["paired"].items():
            a, b = pair.split("_minus_")
            for metric, d in row.items():
                diffs = [_nan(r["models"][a][metric]) - _nan(r["models"][b][metric])
                         for r in per_seed]
                assert _nan(d["mean"]) == pytest.approx(np.mean(diffs), rel=1e-12, abs=1e-12,
                                                        nan_ok=True)
                if d["se"] is not None and math.isfinite(d["se"]) and d["se"] > 0:
                    assert d["z"] == pytest.approx(d["mean"] / d["se"], rel=1e-12)
                else:  # one seed (--tiny): no standard error, no z
                    assert d["z"] is None, (name, pair, metric)


def _per_seed(shares):
    """Synthetic per-seed rows: {model: share_within_3std per seed}."""
    return [{"models": {m: {"share_within_3std": v[i], "mmd": 0.1} for m, v in shares.items()},
             "diagnostics": {"kale_heldout": 0.5}} for i in range(3)]


def test_summarise_standard_errors_z_and_targets():
    config = common.config_for("test:ring", {})
    # Binary fractions, so that the constant difference below is exactly constant.
    shares = {"base": [0.125, 0.25, 0.375], "gebm_beta1": [0.375, 0.5, 0.625],
              "gebm_chosen": [0.135, 0.28, 0.365], "gan": [0.5, 0.5, 0.5]}
    out = seeded.summarise(config, _per_seed(shares), "share_within_3std")
    s = out["summary"]["base"]["share_within_3std"]
    assert s["mean"] == 0.25 and s["se"] == pytest.approx(0.125 / math.sqrt(3))
    # gebm_beta1 - base = 0.25 on every seed: standard error 0, z undefined.
    d = out["paired"]["gebm_beta1_minus_base"]["share_within_3std"]
    assert d["mean"] == 0.25 and d["se"] == 0.0 and math.isnan(d["z"])
    # gebm_chosen - base = (0.01, 0.03, -0.01): mean 0.01, sd 0.02, se 0.02 / sqrt(3), z 0.87.
    d = out["paired"]["gebm_chosen_minus_base"]["share_within_3std"]
    assert d["mean"] == pytest.approx(0.01)
    assert d["se"] == pytest.approx(0.02 / math.sqrt(3))
    assert d["z"] == pytest.approx(0.01 / (0.02 / math.sqrt(3)))
    assert out["targets"]["gebm_chosen_minus_base_by_3se_on_share_within_3std"] is False
    # gebm_chosen - gan = (-0.365, -0.22, -0.135): share is 'max', so a negative z is no win.
    d = out["paired"]["gebm_chosen_minus_gan"]["share_within_3std"]
    assert d["z"] < -3
    # A large paired effect: gebm_chosen - base = (0.2, 0.22, 0.24), z = 0.22 / (0.02 / sqrt(3)).
    shares["gebm_chosen"] = [0.325, 0.47, 0.615]
    out = seeded.summarise(config, _per_seed(shares), "share_within_3std")
    assert out["paired"]["gebm_chosen_minus_base"]["share_within_3std"]["z"] == pytest.approx(
        0.22 / (0.02 / math.sqrt(3)))
    assert out["targets"]["gebm_chosen_minus_base_by_3se_on_share_within_3std"] is True


def _levels(curve):
    """Mean and standard error of the metric over the second half of the curve's run."""
    tail = [v for g, v in zip(curve["gradient_evaluations"], curve["metric"])
            if g > 0 and g >= curve["gradient_evaluations"][-1] / 2]
    se = np.std(tail, ddof=1) / np.sqrt(len(tail)) if len(tail) > 1 else 0.0
    return np.mean(tail), se


def test_samplers(run):
    _, results = run
    section = results["samplers"]
    budget = section["gradient_budget"]
    expected = [n for n in gebm.SAMPLER_SETS if n in seeded.DATASETS]
    assert list(section["datasets"]) == expected
    assert section["datasets_missing"] == [n for n in gebm.SAMPLER_SETS if n not in expected]
    verdicts = []
    for name, entry in section["datasets"].items():
        assert entry["metric_name"] == gebm.SAMPLER_METRICS.get(
            name, seeded.DATASETS[name]["headline"])
        sign = 1.0 if entry["goal"] == "min" else -1.0
        chosen = results[name]["per_seed"][0]["chosen_beta"]
        if entry["tempered_beta_source"] == "validation":
            assert entry["tempered_beta"] == chosen != 1.0
        else:
            assert entry["tempered_beta"] == gebm.FIXED_TEMPERED_BETA and chosen == 1.0
        for key, beta in (("beta1", 1.0), ("tempered", entry["tempered_beta"])):
            panel = entry["panels"][key]
            assert panel["beta"] == beta
            steps = panel["step_sizes"]
            assert steps["ula"] == steps["mala"] and steps["kla"] == steps["hmc"]
            for kernel in gebm.SAMPLER_KERNELS:
                curve = panel[kernel]
                grads = curve["gradient_evaluations"]
                assert grads[0] == 0 and grads[-1] == budget, (name, key, kernel)
                assert np.all(np.diff(grads) == section["thin"])
                assert len(curve["metric"]) == len(grads)
                # Same start latents for every kernel and beta.
                assert curve["metric"][0] == entry["metric_at_start"]
                assert curve["level_second_half"] == pytest.approx(_levels(curve)[0])
                assert curve["level_se"] == pytest.approx(_levels(curve)[1])
                assert curve["step_size"] == pytest.approx(steps[kernel], rel=1e-6)
            assert panel["ula"]["acceptance_rate"] == 1.0  # unadjusted, nothing non-finite
            assert panel["ula"]["num_nonfinite"] == 0
            for kernel in ("mala", "hmc"):
                assert 0.0 <= panel[kernel]["acceptance_rate"] <= 1.0
            levels = {k: sign * panel[k]["level_second_half"] for k in gebm.SAMPLER_KERNELS}
            assert levels[panel["best_kernel"]] == min(levels.values())
            ok = levels["kla"] <= min(levels.values()) + 2 * panel["kla"]["level_se"]
            assert panel["kla_within_2se_of_best"] == ok
            assert section["kla_within_2se_of_best"][name][key] == ok
            verdicts.append(ok)
        authors = entry["authors_kla"]
        assert authors["beta"] == 100.0 and authors["friction"] == 0.04
        assert authors["gradient_evaluations"][-1] == authors["num_steps"]
        assert authors["metric"][0] == entry["metric_at_start"]
        # Five decay stages of sqrt(0.1) each (the last starts at step 4 * decay_every).
        assert authors["final_step_size"] == pytest.approx(
            authors["step_size"] * 0.1 ** 2, rel=1e-5)
    assert section["reproduces"] == (bool(verdicts) and all(verdicts))


def test_tempered_beta_comes_from_the_seed0_validation_choice(tmp_path):
    out = str(tmp_path)
    assert gebm._tempered_beta(out, "ring", True)[:2] == (10.0, "fixed")  # no claims.json
    for tiny, chosen, expected in ((True, 30.0, (30.0, "validation")),
                                   (True, 1.0, (10.0, "fixed")),     # beta 1: not tempered
                                   (False, 30.0, (10.0, "fixed"))):  # a full-size section
        common.update_results(out, "ring", {"tiny": tiny, "per_seed": [
            {"seed": 0, "chosen_beta": chosen}, {"seed": 1, "chosen_beta": 3.0}]})
        assert gebm._tempered_beta(out, "ring", True)[:2] == expected, (tiny, chosen)


def test_report_prints_every_section(run):
    out, results = run
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        report.main(os.path.join(out, "claims.json"))
    text = text.getvalue()
    for claim in ORDER:
        assert f"### {claim}: reproduces = " in text, claim
    # The numbers are the JSON's, at 3 significant digits.
    ring = results["samplers"]["datasets"]["ring"]["panels"]["beta1"]["kla"]
    assert f"{ring['level_second_half']:.3g} ± {ring['level_se']:.2g}" in text
    curve = results["curve"]["summary"]["truth"]["on_curve_share"]
    assert "| truth (fresh draws) | " in text and f"{curve['mean']:.3g}" in text


def test_kale_vs_kl(run):
    """KL(N(mu, Sigma) || N(0, I)) = 0.5 (tr Sigma - d + |mu|^2 - log det Sigma), with one variance
    VARIANCE and |mu| = MEAN_SHIFT: 0.5 (VARIANCE - 1 + MEAN_SHIFT^2 - log VARIANCE) in every
    dimension; the linear class's KALE is |mu|^2 / 2. KALE <= KL for any energy, and the estimate
    (fresh samples) errs by its Monte-Carlo error: below KL + Z_TOLERANCE standard errors."""
    from experiments.claims import kale_vs_kl  # pylint: disable=g-import-not-at-top
    _, results = run
    section = results["kale_vs_kl"]
    assert {r["energy_class"] for r in section["rows"]} == {"quadratic", "linear", "mlp"}
    variance, shift = kale_vs_kl.VARIANCE, kale_vs_kl.MEAN_SHIFT
    kl = 0.5 * (variance - 1.0 + shift ** 2 - math.log(variance))
    for row in section["rows"]:
        _check(row, KALE_ROW, "kale_vs_kl row")
        assert row["kl"] == pytest.approx(kl, rel=1e-6), row
        assert row["standard_error"] > 0
        assert row["kale"] <= kl + kale_vs_kl.Z_TOLERANCE * row["standard_error"], row
        if row["energy_class"] == "linear":
            assert row["kale_closed_form"] == pytest.approx(shift ** 2 / 2, rel=1e-6)
    assert section["bound_holds"] is True


def test_gan(run):
    _, results = run
    row = results["gan"]["digits"]
    _check(row, {"kale_mmd_gebm": float, "gan_mmd_base": float, "gebm_better_mmd": bool},
           "gan digits")
    se = math.hypot(row["kale_mmd_gebm_se"], row["gan_mmd_base_se"])
    assert row["gebm_better_mmd"] == (row["kale_mmd_gebm"] < row["gan_mmd_base"] - 2 * se)
    assert results["gan"]["reproduces"] == row["gebm_better_mmd"]


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


def test_kale_vs_kl_check_trains_to_the_same_answers_with_donsker():
    """The claim's Gaussian check (d = 2, the quadratic class, which contains -log dP/dG, so
    KALE = KL; a smaller budget than the claim's) with the energy trained by 'kale' and by
    'donsker': both estimates match KL within Z_TOLERANCE standard errors of their own
    Monte-Carlo error, and agree with each other within Z_TOLERANCE combined standard errors
    (independent evaluation samples). tests/test_kale.py checks the linear class's closed form
    for 'donsker' too."""
    kind = "quadratic"
    from experiments.claims import kale_vs_kl  # pylint: disable=g-import-not-at-top
    d = 2
    mu, sigma, kl = kale_vs_kl.gaussian_pair(d, 0)
    chol = np.linalg.cholesky(sigma)
    closed = kl if kind == "quadratic" else 0.5 * float(mu @ mu)
    estimates = {}
    for criterion in ("kale", "donsker"):
        key = jax.random.fold_in(jax.random.PRNGKey(0), kale_vs_kl.CLASSES.index(kind))
        scores, _ = kale_vs_kl.train_and_score(key, mu, chol, kind=kind, d=d, num_steps=2000,
                                               batch_size=256, num_samples=100_000,
                                               criterion=criterion)
        est, se = float(scores["kale_dv"]), float(scores["standard_error"])
        assert abs(est - closed) <= kale_vs_kl.Z_TOLERANCE * se, (criterion, est, closed, se)
        estimates[criterion] = (est, se)
    (a, sa), (b, sb) = estimates["kale"], estimates["donsker"]
    assert abs(a - b) <= kale_vs_kl.Z_TOLERANCE * math.hypot(sa, sb), estimates
