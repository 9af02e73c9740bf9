"""End-to-end test of `python -m experiments.sample`: train configs/test.py:digits (8x8 images,
mlp pair), then sample it with two kernels (ula over two betas, kla at one) and with the authors'
preset, and check results.json, samples.npz, the PNGs and the GIF; plus the one-line errors. Every
binary runs as a subprocess from the repository root with 4 forced CPU devices; the sampling runs
start together so their compilations overlap. In-process tests cover the config helpers.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from experiments import sample
from kale_jax import sampling
from kale_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/test.py:digits"
BETAS = "1.0,4.0"


def _start(args, env):
    return subprocess.Popen([sys.executable, "-m"] + args, cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def runs(env, tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    workdir = str(root / "digits")
    code, out, err = _finish(_start(["experiments.train", f"--config={CONFIG}",
                                     f"--workdir={workdir}", "--config.train.tensorboard=False"],
                                    env))
    assert code == 0, err[-3000:]
    stats_dir = str(root / "stats")
    commands = {
        # Two betas: the top-level results are the first's (beta = 1, as without a sweep).
        "ula": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                f"--config.sample.stats_dir={stats_dir}", f"--config.sample.betas={BETAS}"],
        "kla": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                "--config.sampler.kernel=kla", "--config.sampler.friction=2.0",
                f"--config.sample.stats_dir={stats_dir}"],
        "wrong_latent": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                         "--config.model.latent_dim=5"],
        "bad_record": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                       "--config.sample.record_every=3"],
        "no_checkpoint": ["experiments.sample", f"--config={CONFIG}",
                          f"--workdir={root / 'empty'}"],
        "kla_adaptation": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                           "--config.sampler.kernel=kla",
                           "--config.sampler.num_adaptation_steps=5"],
        # The preset sets 1000 steps; the explicit flag wins. samples.npz keeps 5 of 16 chains.
        "preset": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                   "--preset=authors_kla", "--config.sampler.num_steps=4",
                   "--config.sample.num_saved=5", f"--config.sample.stats_dir={stats_dir}"],
        "bad_preset": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                       "--preset=authors"],
    }
    processes = {name: _start(args, env) for name, args in commands.items()}
    yield workdir, {name: _finish(p) for name, p in processes.items()}
    for p in processes.values():
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("kernel", ["ula", "kla"])
def test_sample_writes_results_pngs_and_gif(runs, kernel):
    workdir, results = runs
    code, out, err = results[kernel]
    assert code == 0, err[-3000:]
    fid_lines = [line for line in out.splitlines() if line.startswith("FID/KID disabled")]
    assert len(fid_lines) == 1 and "experiments.convert_inception" in fid_lines[0]
    outdir = os.path.join(workdir, "sample", kernel)
    with open(os.path.join(outdir, "results.json")) as f:
        result = json.load(f)
    assert result["kernel"] == kernel and result["num_samples"] == 16
    assert result["record_steps"] == [0, 2, 4] and result["checkpoint_step"] == 6
    assert result["num_devices"] == 4 and result["fid_enabled"] is False
    curves = result["metrics"]
    assert set(curves) == {"energy", "acceptance", "mmd"}
    assert all(len(v) == 3 for v in curves.values())
    assert curves["acceptance"][0] is None  # no proposals before the first step
    assert all(0.0 <= a <= 1.0 for a in curves["acceptance"][1:])
    assert all(math.isfinite(v) for v in curves["energy"] + curves["mmd"])
    assert result["base"]["energy"] == curves["energy"][0]
    assert result["gebm"]["mmd"] == curves["mmd"][-1]
    assert 0.0 < result["mmd_noise"] < 0.1  # true-vs-true MMD² spread, drawn in metrics.png
    for name in ("kale_train", "kale_heldout"):
        assert math.isfinite(result[name])
    with Image.open(os.path.join(outdir, "base.png")) as grid:
        assert grid.size == (4 * 8, 4 * 8)  # 16 samples of 8x8 in a 4x4 grid
    with Image.open(os.path.join(outdir, "gebm.png")) as grid:
        assert grid.size == (32, 32)
    with Image.open(os.path.join(outdir, "chains.gif")) as gif:
        assert gif.n_frames == 3  # one frame per record
    with Image.open(os.path.join(outdir, "metrics.png")) as plot:
        assert plot.size[0] > 300
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["gebm"]["energy"] == pytest.approx(curves["energy"][-1])


def test_one_line_errors(runs):
    _, results = runs
    for name, expected in (("wrong_latent", "config.model"),
                           ("bad_record", "config.sample.record_every=3 must divide"),
                           ("no_checkpoint", "no checkpoints in"),
                           ("kla_adaptation", "num_adaptation_steps=0"),
                           ("bad_preset", "'authors_kla', 'authors_langevin', 'adapted_mala'")):
        code, _, err = results[name]
        assert code == 2, (name, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and expected in lines[0], (name, err[-2000:])


def test_ula_and_kla_gebm_samples_differ_but_base_samples_agree(runs):
    workdir, results = runs
    loaded = {}
    for kernel in ("ula", "kla"):
        with open(os.path.join(workdir, "sample", kernel, "results.json")) as f:
            loaded[kernel] = json.load(f)
    # Same seed and chains: record 0 (the base, before any MCMC step) is identical.
    assert loaded["ula"]["base"]["energy"] == pytest.approx(loaded["kla"]["base"]["energy"])
    assert loaded["ula"]["gebm"]["energy"] != loaded["kla"]["gebm"]["energy"]


def test_beta_sweep_results_and_samples(runs):
    """ula at betas (1, 4): paired chains, per-beta curves, the validation choice, samples.npz."""
    workdir, results = runs
    outdir = os.path.join(workdir, "sample", "ula")
    with open(os.path.join(outdir, "results.json")) as f:
        result = json.load(f)
    assert result["betas"] == [1.0, 4.0] and result["beta"] == 1.0
    by_beta = result["by_beta"]
    assert set(by_beta) == {"1.0", "4.0"}
    assert by_beta["1.0"]["metrics"] == result["metrics"]  # top level = the first beta
    low, high = by_beta["1.0"], by_beta["4.0"]
    # Paired: the base (record 0) is the same chains at every beta; later records differ.
    assert low["metrics"]["energy"][0] == high["metrics"]["energy"][0]
    assert low["metrics"]["mmd"][0] == high["metrics"]["mmd"][0]
    assert low["final"]["energy"] != high["final"]["energy"]
    for entry in (low, high):
        assert set(entry["validation"]) == {"mmd"} and math.isfinite(entry["validation"]["mmd"])
        assert 0.0 <= entry["acceptance_rate"] <= 1.0 and entry["num_nonfinite"] == 0
        assert 0.0 < entry["ess_fraction"] <= 1.0
    # Chosen on the validation reference (digits: first half of the test split), lower is better.
    selection = result["selection"]
    assert result["select_by"] == selection["metric"] == "mmd" and selection["goal"] == "min"
    validation = [low["validation"]["mmd"], high["validation"]["mmd"]]
    assert result["chosen_beta"] == [1.0, 4.0][int(np.argmin(validation))]
    assert selection["validation"] == {"1.0": validation[0], "4.0": validation[1]}
    assert selection["test"] == {"1.0": low["final"]["mmd"], "4.0": high["final"]["mmd"]}
    # Energy diagnostics beside the results, and in the summary line.
    assert 0.0 < result["ess_fraction"] <= 1.0
    assert result["ess_fraction"] == pytest.approx(low["ess_fraction"])  # beta = 1
    summary = json.loads(results["ula"][1].strip().splitlines()[-1])
    for name in ("kale_train", "kale_heldout", "ess_fraction", "acceptance_rate"):
        assert math.isfinite(summary[name]), name
    assert summary["acceptance_by_beta"] == {"1.0": low["acceptance_rate"],
                                             "4.0": high["acceptance_rate"]}
    assert summary["chosen_beta"] == result["chosen_beta"]
    # samples.npz: base, gebm at the chosen beta, and every beta's samples (16 chains, 8x8x1).
    with np.load(os.path.join(outdir, "samples.npz"), allow_pickle=False) as saved:
        assert set(saved.files) == {"base", "gebm", "betas", "gebm_per_beta"}
        assert saved["base"].shape == saved["gebm"].shape == (16, 8, 8, 1)
        assert saved["base"].dtype == saved["gebm"].dtype == np.float32
        assert saved["gebm_per_beta"].shape == (2, 16, 8, 8, 1)
        np.testing.assert_array_equal(saved["betas"], [1.0, 4.0])
        chosen = [1.0, 4.0].index(result["chosen_beta"])
        np.testing.assert_array_equal(saved["gebm"], saved["gebm_per_beta"][chosen])
        assert not np.array_equal(saved["gebm_per_beta"][0], saved["gebm_per_beta"][1])
        assert not np.array_equal(saved["base"], saved["gebm"])
    assert not [f for f in os.listdir(outdir) if ".tmp" in f]
    with Image.open(os.path.join(outdir, "beta_sweep.png")) as plot:
        assert plot.size[0] > 500 and plot.size[1] > 3 * 150  # 3 metric rows, 2 columns
    # One beta: samples.npz holds base and gebm only, and no sweep figure.
    kla_dir = os.path.join(workdir, "sample", "kla")
    with np.load(os.path.join(kla_dir, "samples.npz"), allow_pickle=False) as saved:
        assert set(saved.files) == {"base", "gebm"}
        ula_base = np.load(os.path.join(outdir, "samples.npz"))["base"]
        np.testing.assert_array_equal(saved["base"], ula_base)  # same seed, same chains
    assert not os.path.exists(os.path.join(kla_dir, "beta_sweep.png"))


def test_preset_flag_sets_the_sampler_and_explicit_flags_win(runs):
    workdir, results = runs
    code, out, err = results["preset"]
    assert code == 0, err[-3000:]
    with open(os.path.join(workdir, "sample", "authors_kla", "results.json")) as f:
        result = json.load(f)
    preset = sampling.PRESETS["authors_kla"]
    assert result["kernel"] == "kla" and result["beta"] == 100.0 == preset["beta"]
    assert result["num_steps"] == 4  # --config.sampler.num_steps=4 beat the preset's 1000
    assert result["step_size"] == pytest.approx(0.02)
    assert result["options"] == {"friction": 0.04, "decay_factor": preset["decay_factor"],
                                 "decay_every": 200, "num_adaptation_steps": 0}
    assert math.isfinite(result["gebm"]["energy"])
    with np.load(os.path.join(workdir, "sample", "authors_kla", "samples.npz")) as saved:
        assert saved["base"].shape == saved["gebm"].shape == (5, 8, 8, 1)
        ula_base = np.load(os.path.join(workdir, "sample", "ula", "samples.npz"))["base"]
        np.testing.assert_array_equal(saved["base"], ula_base[:5])  # the first 5 chains


def _config(**sample):
    config = test_config.get_config("digits")
    for key, value in sample.items():
        config.sample[key] = value
    return config


def test_betas_config_and_selection_errors():
    config = _config()
    assert sample.betas(config) == (config.sampler.beta,)
    assert sample.betas(_config(betas=(1, 10, 100))) == (1.0, 10.0, 100.0)
    for bad in ((), (0.0, 1.0), (1.0, float("inf")), (1.0, "x"), (1.0, 1.0), (True,)):
        with pytest.raises(ConfigError, match="config.sample.betas"):
            sample.validate_sample_config(_config(betas=bad))
    with pytest.raises(ConfigError, match="config.sample.num_saved"):
        sample.validate_sample_config(_config(num_saved=0))
    ring = test_config.get_config("ring")
    assert sample._selection(ring, use_mmd=True, fid_on=False) == ("mmd", "min")
    ring.sample.select_by = "mode_kl"
    assert sample._selection(ring, use_mmd=True, fid_on=False) == ("mode_kl", "min")
    assert sample._selection(_config(), use_mmd=False, fid_on=True) == ("fid", "min")
    assert sample._selection(_config(), use_mmd=False, fid_on=False) == (None, None)
    for select_by, match in (("energy", "do not measure sample quality"),
                             ("fid", "Inception weights"), ("mode_kl", r"use one of \('mmd',\)")):
        config = _config(select_by=select_by)
        with pytest.raises(ConfigError, match=match):
            sample._selection(config, use_mmd=True, fid_on=False)


def test_apply_preset_respects_explicit_flags():
    config = test_config.get_config("digits")
    config.sampler.friction = 0.5
    config.sampler.num_steps = 8  # as if given by --config.sampler.num_steps=8
    sample.apply_preset(config, "adapted_mala", overrides={"sampler.num_steps": 8})
    preset = sampling.PRESETS["adapted_mala"]
    assert config.sampler.kernel == "mala" and config.sampler.num_steps == 8
    assert config.sampler.num_adaptation_steps == preset["num_adaptation_steps"]
    assert config.sampler.friction is None and config.sampler.decay_factor is None
    sample.validate_sample_config(config)
    with pytest.raises(ConfigError, match="is not a sampler preset; use one of"):
        sample.apply_preset(config, "mala")
