"""experiments.workdir_config, end to end: train configs/test.py on another dataset than its
default (grid instead of ring), then `python -m experiments.sample --workdir=W` with no --config
samples it (the checkpoint would refuse configs/test.py's ring) with a command-line override on
top. The same training run checks the quiet start (no TPU probe, oneDNN or absl pre-init lines
on a CPU run) and its TensorBoard events (config text, pictures); the sampling run checks the
progress lines (rate, ETA). In-process tests cover the JSON round trip.
"""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from configs import test as test_config
from experiments import workdir_config
from kale_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_NOISE = ("Unable to initialize backend", "oneDNN", "absl::InitializeLog",
               "Logging before flag parsing", "cpu_feature_guard")


def _run(args, env):
    result = subprocess.run([sys.executable, "-m"] + args, cwd=REPO, env=env, text=True,
                            capture_output=True, timeout=600)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """A 6-step grid run of configs/test.py, in the environment a user has (no JAX_PLATFORMS,
    no TensorFlow log settings), TensorBoard on."""
    workdir = str(tmp_path_factory.mktemp("workdir_config") / "grid")
    user_env = {k: v for k, v in env.items()
                if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    code, _, err = _run(["experiments.train", "--config=configs/test.py", f"--workdir={workdir}",
                         "--config.data.name=grid"], user_env)
    assert code == 0, err[-3000:]
    return workdir, err


@pytest.fixture(scope="module")
def sampled(env, trained):
    workdir, _ = trained
    code, out, err = _run(["experiments.sample", f"--workdir={workdir}",
                           "--config.sample.betas=1.0,2.0"], env)
    assert code == 0, err[-3000:]
    with open(os.path.join(workdir, "sample", "ula", "results.json")) as f:
        return json.load(f), out, err


def test_training_starts_quietly(trained):
    _, err = trained
    for noise in START_NOISE:
        assert noise not in err, (noise, err[:3000])


def test_training_events_hold_the_config_and_the_pictures(trained):
    workdir, _ = trained
    (path,) = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    content = open(path, "rb").read()
    assert b'"name": "grid"' in content  # the config, as text
    assert content.count(b"samples/scatter") == 2  # evaluations at steps 3 and 6
    assert b"energy_loss" in content and b"mmd_gebm" in content


def test_sample_reads_the_workdirs_config_and_applies_overrides(sampled):
    result, out, _ = sampled
    assert result["dataset"] == "grid" and result["checkpoint_step"] == 6
    assert result["betas"] == [1.0, 2.0]  # the override, on a typed placeholder
    assert json.loads(out.strip().splitlines()[-1])["betas"] == [1.0, 2.0]


def test_sample_logs_progress_with_rate_and_eta(sampled):
    _, _, err = sampled
    # configs/test.py: 16 chains in chunks of 8, for each beta.
    for beta in ("1", "2"):
        assert re.search(rf"beta {beta}: 8/16 samples \(50\.0%\), [\d.e+]+ samples/s, "
                         r"ETA \d+m\d\ds", err), err[-3000:]
        assert f"beta {beta}: 16/16 samples (100.0%)" in err


def test_config_json_round_trip_keeps_values_tuples_and_placeholder_types(tmp_path):
    original = test_config.get_config("digits")
    original.sample.num_saved = 7
    (tmp_path / "config.json").write_text(original.to_json_best_effort(indent=2))
    loaded = workdir_config.get_config(str(tmp_path))
    assert loaded.to_dict() == original.to_dict()
    assert loaded.sample.betas is None and loaded.sample.get_type("betas") is tuple
    assert loaded.sample.get_type("select_by") is str


def test_missing_or_bad_config_json_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        workdir_config.get_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="does not hold a config"):
        workdir_config.get_config(str(tmp_path))
    with pytest.raises(ConfigError, match="--workdir is required"):
        workdir_config.default_flag(["kale-sample"])
