"""The training config saved in a workdir, as a config file for --config:
`--config=experiments/workdir_config.py:WORKDIR`.

Training writes WORKDIR/config.json (the full config after the command line's overrides).
`get_config(workdir)` reads it back as an ml_collections ConfigDict that command-line overrides
(`--config.sampler.kernel=kla`) apply to as they do to configs/*.py:

* JSON lists become tuples (the configs hold tuples; JSON has only lists);
* a None entry becomes a typed placeholder when a shipped config declares one at the same key
  (`config_dict.placeholder(tuple)` for config.sample.betas, ...), so it can still be set from
  the command line.

`experiments.sample` uses it when --config is not given (`default_flag`).
"""
import importlib
import json
import os
import pkgutil
from typing import Any, Dict, List

import ml_collections
from ml_collections import config_dict

CONFIG_FILE = "config.json"


def path_in(workdir: str) -> str:
    """WORKDIR/config.json."""
    return os.path.join(workdir, CONFIG_FILE)


def get_config(workdir: str = "") -> ml_collections.ConfigDict:
    """The config a training run saved in `workdir`.

    Args:
      workdir: a training workdir holding config.json.
    Returns:
      The config (unlocked; config_flags locks it).
    Raises:
      ConfigError: no workdir given, config.json missing or not a JSON object.
    """
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    if not workdir:
        raise ConfigError("experiments/workdir_config.py needs the workdir: "
                          "--config=experiments/workdir_config.py:WORKDIR")
    path = path_in(workdir)
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (training writes it at its start); pass the "
                          "training config instead, e.g. --config=configs/ring.py") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path} ({type(error).__name__}: {error}); pass the "
                          "training config instead, e.g. --config=configs/ring.py") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} does not hold a config (a JSON object); pass the training "
                          "config instead, e.g. --config=configs/ring.py")
    return _to_config(saved, declared_types())


def _to_config(tree: Dict[str, Any], types: Dict[str, type], prefix: str = ""):
    out = ml_collections.ConfigDict()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = _to_config(value, types, f"{path}.")
        elif value is None and path in types:
            out[key] = config_dict.placeholder(types[path])
        else:
            out[key] = _tuples(value)
    return out


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def declared_types() -> Dict[str, type]:
    """'sample.betas' -> tuple, ...: the types of the placeholders (typed None entries) of every
    shipped config (configs/*.py with get_config() callable without arguments)."""
    import configs  # pylint: disable=g-import-not-at-top
    types: Dict[str, type] = {}
    for module in pkgutil.iter_modules(configs.__path__):
        try:
            config = importlib.import_module(f"configs.{module.name}").get_config()
        except Exception:  # pylint: disable=broad-except  # a config that needs an argument
            continue
        _collect(config, "", types)
    return types


def _collect(config, prefix: str, types: Dict[str, type]) -> None:
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            _collect(value, f"{path}.", types)
        elif value is None:
            kind = config.get_type(key)
            if kind is not type(None):
                types.setdefault(path, kind)


def default_flag(argv: List[str]) -> str:
    """The --config value for a binary run without --config: this file with the --workdir of
    argv (experiments.cli.run's default_config).

    Raises:
      ConfigError: no --workdir, or no WORKDIR/config.json to default to.
    """
    from experiments import cli  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    _, workdir = cli._flag_value(argv, "workdir")  # pylint: disable=protected-access
    if not workdir:
        raise ConfigError("--workdir is required, e.g. --workdir=workdirs/ring (its config.json "
                          "is the default config)")
    if not os.path.isfile(path_in(workdir)):
        raise ConfigError(f"no --config given and {path_in(workdir)} does not exist (is "
                          f"--workdir={workdir} a training workdir?); pass the training config, "
                          "e.g. --config=configs/ring.py")
    return f"{os.path.abspath(__file__)}:{workdir}"
