"""Tests of configs/*.py and of config validation (kale_jax.train.validate)."""
import glob
import importlib
import os
import re

import jax
import pytest

from configs import default as default_config
from configs import test as test_config
from kale_jax.errors import DataError
from kale_jax.train import Trainer, train_and_evaluate
from kale_jax.train.validate import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(os.path.basename(path)[:-3]
                      for path in glob.glob(os.path.join(REPO, "configs", "*.py"))
                      if not path.endswith("__init__.py"))
EXPECTED_DATA = {"default": "sphere3d", "test": "ring", "ring": "ring", "grid": "grid",
                 "curve": "curve", "digits": "digits",
                 "shapes": "shapes"}


def test_the_embedded_data_configs_exist():
    assert set(EXPECTED_DATA) <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_is_valid_and_has_the_shared_keys(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if name.startswith("uci_"):
        # The UCI sets are read from files the user downloads; without them, one clear line.
        assert not config.data.data_dir
        with pytest.raises(DataError, match=r"config\.data\.data_dir"):
            validate(config, num_devices=1)
    else:
        validate(config, num_devices=1)
    # Names tools and tests rely on.
    assert config.train.num_steps >= 1
    assert "data_dir" in config.data
    assert config.sampler.kernel in ("ula", "mala", "hmc", "kla", "imh")
    if name in EXPECTED_DATA:
        assert config.data.name == EXPECTED_DATA[name]


@pytest.mark.parametrize("name", [n for n in CONFIG_NAMES if n != "default"])
def test_variants_build_on_default(name):
    """Variants import default.py (directly or through another variant) and keep its layout."""
    source = open(os.path.join(REPO, "configs", f"{name}.py")).read()
    assert re.search(r"from configs import .*\b(default|ring|tabular_default)\b", source)
    variant = importlib.import_module(f"configs.{name}").get_config()
    base = default_config.get_config()
    for section in ("model", "train", "optim", "sampler", "eval"):
        assert set(base[section].keys()) <= set(variant[section].keys()), section


def test_test_config_has_a_digits_variant():
    config = test_config.get_config("digits")
    validate(config, num_devices=4)
    assert config.data.name == "digits"


def test_default_config_is_the_readme_main_job():
    """sphere3d with the mlp pair and a 3-d latent (the main job's promises)."""
    config = default_config.get_config()
    assert (config.data.name, config.model.generator, config.model.energy,
            config.model.latent_dim) == ("sphere3d", "mlp", "mlp", 3)
    assert config.parallel == "shard_map" and config.train.criterion == "kale"


BAD_SETTINGS = [
    ("parallel", "pjit", "shard_map"),
    ("data.name", "mnist", "sphere3d"),
    ("model.generator", "vae", "dcgan"),
    ("model.energy", "transformer", "mlp"),
    ("model.latent_dim", 0, ">= 1"),
    ("train.criterion", "hinge", "kale"),
    ("train.penalty", "spectral", "gradient_l2"),
    ("train.num_steps", 0, ">= 1"),
    ("train.batch_size", -4, ">= 1"),
    ("train.n_critic", 0, ">= 1"),
    ("train.penalty_weight", -1.0, ">= 0"),
    ("train.refine_from", 0, "[1, config.train.num_steps"),
    ("train.refine_penalty_weight", -0.5, ">= 0"),
    ("optim.energy.learning_rate", 0.0, "> 0"),
    ("optim.base.b1", 1.0, "[0, 1)"),
    ("sampler.kernel", "nuts", "mala"),
    ("sampler.step_size", 0.0, "> 0"),
    ("sampler.num_adaptation_steps", 10, "'mala'"),  # with kernel 'ula' (configs/test.py)
    ("eval.num_samples", 0, ">= 1"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_SETTINGS)
def test_bad_setting_names_key_value_and_what_is_allowed(key, value, allowed):
    config = test_config.get_config()
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError) as error:
        validate(config, num_devices=1)
    message = str(error.value)
    assert f"config.{key}={value!r}" in message
    assert allowed in message


def test_batch_must_divide_by_the_device_count(tmp_path):
    """Raised by Trainer / train_and_evaluate before anything is built or written."""
    config = test_config.get_config()
    config.train.batch_size = 18
    assert len(jax.devices()) == 4
    with pytest.raises(ValueError, match=r"config.train.batch_size=18 .* 4 devices"):
        Trainer(config)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="batch_size"):
        train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
    Trainer(config, devices=jax.devices()[:2])  # 18 divides by 2: accepted


def test_unknown_network_fails_before_any_output(tmp_path):
    config = test_config.get_config()
    config.model.generator = "gpt"
    with pytest.raises(ValueError, match=r"config.model.generator='gpt'"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
