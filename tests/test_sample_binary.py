"""End-to-end test of `python -m experiments.sample`: train configs/test.py:digits (8x8 images,
mlp pair), then sample it with two kernels, and check results.json, the PNGs and the GIF; plus the
one-line errors. Every binary runs as a subprocess from the repository root with 4 forced CPU
devices; the sampling runs start together so their compilations overlap.
"""
import json
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/test.py:digits"


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
        "ula": ["experiments.sample", f"--config={CONFIG}", f"--workdir={workdir}",
                f"--config.sample.stats_dir={stats_dir}"],
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
                           ("kla_adaptation", "num_adaptation_steps=0")):
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
