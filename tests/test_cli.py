"""experiments.cli: one-line user errors of the binaries (run as subprocesses), the quiet start,
the console scripts, and the one-CPU-device-per-core advice the binaries log."""
import logging
import os
import subprocess
import sys
import tomllib

import pytest

from experiments import cli


def test_cpu_devices_hint_names_the_setting_when_cores_are_left_idle():
    hint = cli.cpu_devices_hint("cpu", 1, 8)
    assert hint is not None and "JAX_NUM_CPU_DEVICES=8" in hint


def test_cpu_devices_hint_is_silent_on_accelerators_or_with_a_device_per_core():
    assert cli.cpu_devices_hint("gpu", 1, 8) is None
    assert cli.cpu_devices_hint("tpu", 4, 96) is None
    assert cli.cpu_devices_hint("cpu", 2, 2) is None
    assert cli.cpu_devices_hint("cpu", 4, 2) is None
    assert cli.cpu_devices_hint("cpu", 1, None) is None


# ---------------------------------------------------------------- one-line errors of the binaries
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = "from experiments.train import console_main; console_main()"
SAMPLE = "from experiments.sample import console_main; console_main()"
# name -> (binary's code, arguments after --workdir, the error line must contain this). Each one
# fails while the flags are parsed, before jax is imported: about a second each.
ERRORS = {
    "unknown_key": (TRAIN, ["--config=configs/test.py", "--config.train.num_stepz=5"],
                    "unknown config key --config.train.num_stepz: config.train has no key "
                    "'num_stepz'; did you mean --config.train.num_steps?"),
    "unknown_nested_key": (TRAIN, ["--config=configs/test.py",
                                   "--config.model.generator_kwargs.widht=16"],
                           "config.model.generator_kwargs has no key 'widht'; its keys: "
                           "batch_norm, depth, hidden"),
    "wrong_type": (TRAIN, ["--config=configs/test.py", "--config.train.num_steps=abc"],
                   "--config.train.num_steps=abc: config.train.num_steps takes an integer"),
    "wrong_bool": (TRAIN, ["--config=configs/test.py", "--config.train.tensorboard=maybe"],
                   "config.train.tensorboard takes true or false"),
    "missing_config_file": (TRAIN, ["--config=configs/rng.py"],
                            "no such file 'configs/rng.py'"),
    "config_is_a_directory": (TRAIN, ["--config=configs"], "is a directory"),
    "unknown_flag": (TRAIN, ["--config=configs/test.py", "--num_steps=5"],
                     "unknown flag --num_steps"),
    "missing_config_flag": (TRAIN, [], "--config is required, e.g. --config=configs/ring.py"),
    "sample_without_config_json": (SAMPLE, [], "config.json does not exist"),
}


@pytest.fixture(scope="module")
def error_runs(env, tmp_path_factory):
    """Every case of ERRORS as the console script's function, run from a directory that is not
    the repository (configs/test.py is then found in the installed package): all at once."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    workdir = str(cwd / "workdir")
    run_env = dict(env, PYTHONPATH=REPO)  # the worktree as the installed package
    processes = {name: subprocess.Popen([sys.executable, "-c", code, f"--workdir={workdir}",
                                         *args], cwd=str(cwd), env=run_env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, (code, args, _) in ERRORS.items()}
    results = {name: p.communicate(timeout=120) + (p.returncode,)
               for name, p in processes.items()}
    yield results, workdir


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_user_error_is_one_line_with_exit_status_2(error_runs, name):
    results, workdir = error_runs
    _, err, code = results[name]
    assert code == 2, (name, err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err[-3000:])
    assert ERRORS[name][2] in lines[0], (name, lines[0])
    assert not os.path.exists(workdir)  # nothing was written


def test_missing_config_file_suggests_the_nearest_shipped_one(error_runs):
    _, err, _ = error_runs[0]["missing_config_file"]
    assert "did you mean --config=configs/ring.py?" in err and "configs/test.py" in err


def test_config_path_falls_back_to_the_installed_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = cli.resolve_config_path("configs/test.py:digits")
    assert resolved == os.path.join(REPO, "configs", "test.py") + ":digits"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "test.py").write_text("")
    assert cli.resolve_config_path("configs/test.py:digits") == "configs/test.py:digits"


def test_describe_override_error_names_the_key_and_allows_known_keys():
    from configs import test as test_config  # pylint: disable=g-import-not-at-top
    config = test_config.get_config()
    assert cli.describe_override_error(config, "train.num_steps") is None
    assert cli.describe_override_error(config, "sample.betas") is None  # a typed placeholder
    assert "did you mean --config.train" in cli.describe_override_error(config, "trian.seed")
    assert "is a value (int)" in cli.describe_override_error(config, "train.num_steps.x")


# ----------------------------------------------------------------------------- a quiet start
def test_quiet_start_keeps_the_users_settings():
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    cli.quiet_start(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0"}


def test_quiet_start_drops_only_the_tpu_probe_line():
    cli.quiet_start({})
    logger = logging.getLogger("jax._src.xla_bridge")

    def kept(level, message):
        record = logger.makeRecord(logger.name, level, "xla_bridge.py", 1, message, (), None)
        return logger.filter(record)

    assert not kept(logging.INFO, "Unable to initialize backend 'tpu': INTERNAL: Failed to open "
                    "libtpu.so: cannot open shared object file")
    assert kept(logging.INFO, "Unable to initialize backend 'cuda': no GPU")
    assert kept(logging.WARNING, "Unable to initialize backend 'tpu': TPU in use")


def test_tensorflow_import_is_quiet_after_quiet_start(env):
    """TensorFlow (imported by the tfds input pipeline) prints its oneDNN notice and absl's
    pre-initialisation line at import unless the environment says otherwise."""
    run_env = {k: v for k, v in env.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    code = ("from experiments import cli; cli.quiet_start(); import tensorflow as tf; "
            "print(int(tf.constant(1) + 1))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=run_env,
                            capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "2"
    for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in result.stderr, result.stderr[-3000:]


# --------------------------------------------------------------------------- console scripts
_CHECK_SCRIPT = """
import importlib, inspect, sys
module_name, function_name = sys.argv[1].split(":")
function = getattr(importlib.import_module(module_name), function_name)
required = [p for p in inspect.signature(function).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
print(callable(function) and not required)
"""


def test_console_scripts_resolve_to_functions_without_arguments():
    """pyproject.toml's [project.scripts]: each target imports and takes no argument (the venv's
    editable install may predate them, so the targets are checked here, not the installed
    scripts). Each in its own process: the binaries define their absl flags at import."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert set(scripts) == {"kale-train", "kale-sample", "kale-prepare"}
    checks = {name: subprocess.Popen([sys.executable, "-c", _CHECK_SCRIPT, target], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for name, target in scripts.items()}
    for name, process in checks.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "True", (name, scripts[name], err[-2000:])
