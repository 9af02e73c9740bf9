"""Checks a training config before anything is built or compiled: the one place for it.

    validate(config, num_devices)            every key: names, ranges, devices, image sizes
    against_checkpoint(config, metadata)     the config vs the one a checkpoint was written with
    workdir(path)                            the workdir can be created and written

Every config error is a ConfigError (a ValueError) naming the config key, the value and what is
allowed; workdir errors are CheckpointErrors naming the path. All are one line (the binaries print
them without a traceback and exit with status 2).
"""
from __future__ import annotations

import json
import numbers
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import ml_collections

from kale_jax import checks, kale, sampling
from kale_jax.errors import CheckpointError, ConfigError, DataError
from kale_jax.train import faults
from kale_jax.train.parallel import PARALLEL_KINDS

# Config entries that fix a checkpoint's structure or meaning: a run resuming it must keep them
# (the sampling binary passes SAMPLE_KEYS: it may use another seed). Nested dicts are compared
# leaf by leaf, so the error names e.g. config.model.latent_dim.
RESUME_KEYS = ("seed", "data.name", "data.image_size", "model")
SAMPLE_KEYS = ("data.name", "data.image_size", "model")
# The energy-only EBM baseline (kale_jax.ebm, trained by kale_jax.train.ebm_loop): its state holds
# no generator, so only the energy's entries and the replay buffer's size fix its checkpoints.
EBM_CRITERION = "ebm"
TRAIN_CRITERIA = tuple(kale.CRITERIA) + (EBM_CRITERION,)
EBM_RESUME_KEYS = ("seed", "data.name", "data.image_size", "model.energy", "model.energy_kwargs",
                   "model.energy_floor", "train.criterion", "ebm.buffer_size")
# Entries inside those keys that a checkpoint does NOT fix: the compute dtype (parameters and
# state are float32 whatever it is), so a run can resume or sample with the other one.
FREE_KEYS = ("model.dtype",)


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config.{key} is missing")
        node = node[part]
    return node


def _choice(config, key: str, allowed: Iterable[Any]) -> Any:
    return checks.check_choice(_get(config, key), f"config.{key}", tuple(allowed))


def _positive_int(config, key: str, minimum: int = 1) -> int:
    return checks.check_int(_get(config, key), f"config.{key}", minimum=minimum)


def _positive_float(config, key: str, allow_zero: bool = False) -> float:
    return checks.check_positive(_get(config, key), f"config.{key}", allow_zero=allow_zero)


def _in_open_unit(config, key: str) -> float:
    return checks.check_probability(_get(config, key), f"config.{key}", include_one=False)


def _bool(config, key: str) -> None:
    """config.<key> is True or False when present."""
    section, _, leaf = key.rpartition(".")
    if leaf in _get(config, section):
        checks.check_bool(_get(config, key), f"config.{key}")


def _energy_floor(config) -> None:
    floor = _get(config, "model.energy_floor")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, numbers.Real)):
        raise ConfigError(f"config.model.energy_floor={floor!r} must be None or a number")


BASE_OBJECTIVES = ("kale", "mle", "gebm_mle")
DENSITY_OBJECTIVES = ("mle", "gebm_mle")  # base steps that need the base's exact log density


def _model_dtype(config, with_generator: bool = True) -> None:
    """config.model.dtype: 'float32' (absent) or 'bfloat16'; flow generators need 'float32'."""
    from kale_jax.train import models  # pylint: disable=g-import-not-at-top
    models.compute_dtype(config, with_generator=with_generator)


def _validate_base_objective(config) -> None:
    """config.model.base_objective: 'kale' (default when absent), or 'mle' / 'gebm_mle' (flow
    bases only, energy trained by KALE)."""
    from kale_jax import networks  # pylint: disable=g-import-not-at-top

    objective = config.model.get("base_objective", "kale")
    checks.check_choice(objective, "config.model.base_objective", BASE_OBJECTIVES)
    if objective in DENSITY_OBJECTIVES and config.model.generator not in networks.FLOW_NAMES:
        raise ConfigError(f"config.model.base_objective={objective!r} needs a flow generator "
                          f"(config.model.generator in {networks.FLOW_NAMES}), got "
                          f"{config.model.generator!r}")
    if objective in DENSITY_OBJECTIVES and config.train.criterion != "kale":
        raise ConfigError(f"config.model.base_objective={objective!r} trains the energy with "
                          f"KALE; set config.train.criterion='kale' "
                          f"(got {config.train.criterion!r})")
    if "nll_base_samples" in config.eval:
        _positive_int(config, "eval.nll_base_samples", minimum=2)


def _validate_refinement(config) -> None:
    """config.train.refine_from: None (no refinement phase) or a base step in [1, num_steps);
    config.train.refine_penalty_weight: None (the joint phase's weight) or a number >= 0."""
    num_steps = config.train.num_steps
    checks.check_int(config.train.get("refine_from"), "config.train.refine_from", minimum=1,
                     maximum=num_steps - 1, allow_none=True,
                     fix=f"a base step in [1, config.train.num_steps={num_steps}), or None (off)")
    if config.train.get("refine_penalty_weight") is not None:
        _positive_float(config, "train.refine_penalty_weight", allow_zero=True)


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> None:
    """Raises ConfigError (a ValueError) on the first bad setting of a training config.

    Checks names, ranges, the device count, the dataset's own options and that both networks can
    be built for the data (image sizes, keyword arguments). Builds Linen modules but traces and
    compiles nothing, so it costs milliseconds.

    Args:
      config: the full training config (layout in configs/default.py).
      num_devices: the device count the run will use; the global batch must divide by it.
    """
    from kale_jax import data, networks  # pylint: disable=g-import-not-at-top

    _positive_int(config, "seed", minimum=0)
    _choice(config, "parallel", PARALLEL_KINDS)
    if config.parallel == "pmap":
        import jax  # pylint: disable=g-import-not-at-top
        if jax.process_count() > 1:
            raise ConfigError(f"config.parallel='pmap' runs on one host but this job has "
                              f"{jax.process_count()} processes; use config.parallel='shard_map'")
    _choice(config, "data.name", data.DATASETS)
    _choice(config, "train.criterion", TRAIN_CRITERIA)
    if config.train.criterion == EBM_CRITERION:
        _validate_ebm(config, num_devices)
        return
    _choice(config, "model.generator", networks.GENERATOR_NAMES)
    _choice(config, "model.energy", networks.ENERGY_NAMES)
    if not (_get(config, "model.latent_dim") is None
            and config.model.generator in networks.FLOW_NAMES):  # None: a flow's data dimension
        _positive_int(config, "model.latent_dim")
    _energy_floor(config)
    _model_dtype(config)
    for key in ("model.generator_kwargs", "model.energy_kwargs"):
        if not hasattr(_get(config, key), "items"):
            raise ConfigError(f"config.{key}={_get(config, key)!r} must be a dict")

    _validate_base_objective(config)

    _choice(config, "train.penalty", kale.PENALTIES)
    _positive_float(config, "train.penalty_weight", allow_zero=True)
    for key in ("num_steps", "batch_size", "n_critic", "n_critic_warmup", "warmup_every",
                "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "a_init_batches"):
        _positive_int(config, f"train.{key}")
    _validate_refinement(config)
    if num_devices is not None and config.train.batch_size % num_devices:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not divide by "
                         f"the {num_devices} devices; use a multiple of {num_devices}")

    for name in ("energy", "base"):
        _positive_float(config, f"optim.{name}.learning_rate")
        _in_open_unit(config, f"optim.{name}.b1")
        _in_open_unit(config, f"optim.{name}.b2")
        _positive_float(config, f"optim.{name}.decay_rate")
        _positive_int(config, f"optim.{name}.decay_steps")

    sampling.from_config(_get(config, "sampler"))

    _positive_int(config, "eval.num_samples")
    _positive_int(config, "eval.num_heldout")
    _bool(config, "train.soft_clip")
    _bool(config, "train.tensorboard")
    from kale_jax.train import plateau  # pylint: disable=g-import-not-at-top
    plateau.check_config(config)
    faults.check(config)
    _networks_fit_data(config)


def _finite_pair(config, key: str) -> None:
    checks.check_pair(_get(config, key), f"config.{key}")


def _validate_ebm(config, num_devices: Optional[int]) -> None:
    """config.train.criterion='ebm': an energy-only model trained by maximum likelihood with
    data-space Langevin (kale_jax.train.ebm_loop). The generator and config.sampler are not used
    and not checked; settings that only make sense with a base are rejected."""
    from kale_jax import ebm, networks  # pylint: disable=g-import-not-at-top

    _choice(config, "model.energy", networks.ENERGY_NAMES)
    _energy_floor(config)
    _model_dtype(config, with_generator=False)
    if not hasattr(_get(config, "model.energy_kwargs"), "items"):
        raise ConfigError(f"config.model.energy_kwargs={config.model.energy_kwargs!r} must be a "
                          "dict")
    objective = config.model.get("base_objective", "kale")
    if objective != "kale":
        raise ConfigError(f"config.model.base_objective={objective!r} trains a base, but "
                          "config.train.criterion='ebm' has none; set "
                          "config.model.base_objective='kale' (ignored by the EBM) or another "
                          "criterion")
    if _get(config, "train.penalty") != "none":
        raise ConfigError(f"config.train.penalty={config.train.penalty!r} is not used by "
                          "config.train.criterion='ebm' (it regularises energies with "
                          "config.ebm.alpha); set config.train.penalty='none'")
    for key in ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                "keep_checkpoints"):
        _positive_int(config, f"train.{key}")
    if num_devices is not None and config.train.batch_size % num_devices:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not divide by "
                          f"the {num_devices} devices; use a multiple of {num_devices}")
    _positive_float(config, "optim.energy.learning_rate")
    _in_open_unit(config, "optim.energy.b1")
    _in_open_unit(config, "optim.energy.b2")
    _positive_float(config, "optim.energy.decay_rate")
    _positive_int(config, "optim.energy.decay_steps")
    _bool(config, "train.soft_clip")
    _bool(config, "train.tensorboard")

    if "ebm" not in config:
        raise ConfigError("config.ebm is missing: config.train.criterion='ebm' needs the "
                          "config.ebm keys; start from configs/ebm.py")
    _positive_int(config, "ebm.langevin_steps")
    _positive_int(config, "ebm.eval_steps")
    _positive_float(config, "ebm.step_size")
    if _get(config, "ebm.noise_scale") is not None:
        _positive_float(config, "ebm.noise_scale", allow_zero=True)
    _positive_int(config, "ebm.buffer_size")
    if config.ebm.buffer_size < config.train.batch_size:
        raise ConfigError(f"config.ebm.buffer_size={config.ebm.buffer_size} must be >= "
                          f"config.train.batch_size={config.train.batch_size} (every step writes "
                          "a batch of chain ends); raise it")
    checks.check_probability(_get(config, "ebm.reinit_prob"), "config.ebm.reinit_prob")
    _choice(config, "ebm.init", ebm.INITS)
    if config.ebm.init == "uniform":
        _finite_pair(config, "ebm.init_box")
    else:
        _positive_float(config, "ebm.init_scale")
    if _get(config, "ebm.clip") is not None:
        _finite_pair(config, "ebm.clip")
    _positive_float(config, "ebm.alpha", allow_zero=True)
    if config.ebm.get("unroll") is not None:
        _positive_int(config, "ebm.unroll")
    _positive_int(config, "eval.num_samples")
    _positive_int(config, "eval.num_heldout")
    faults.check(config)
    _networks_fit_data(config, roles=("energy",))


def _networks_fit_data(config, roles: Sequence[str] = ("generator", "energy")) -> None:
    """The dataset's options are valid and the networks of `roles` can be built for its example
    shape."""
    from kale_jax import data, networks  # pylint: disable=g-import-not-at-top
    from kale_jax.train import models  # pylint: disable=g-import-not-at-top
    try:  # the data modules raise ConfigError naming config.data.<key> themselves
        info = data.get_info(config.data)
    except (ConfigError, DataError):
        raise
    except ValueError as error:
        raise ConfigError(f"config.data: {error}") from error
    for role in roles:
        name = config.model[role]
        sizes = networks.supported_image_sizes(name)
        if not sizes:
            continue
        if info.kind != "image":
            raise ConfigError(f"config.model.{role}={name!r} is an image network but "
                              f"config.data.name={info.name!r} holds vectors of shape "
                              f"{tuple(info.shape)}; use 'mlp'")
        kwargs = config.model[f"{role}_kwargs"]
        if "image_size" in kwargs and kwargs["image_size"] != info.shape[0]:
            raise ConfigError(f"config.model.{role}_kwargs.image_size={kwargs['image_size']!r} "
                              f"differs from the data's image size {info.shape[0]}; remove it "
                              "(it is taken from the data) or set config.data.image_size")
        if info.shape[0] not in sizes:
            raise ConfigError(f"config.data.image_size={info.shape[0]!r} is not supported by "
                              f"config.model.{role}={name!r}; allowed: {sizes}")
    builders = {"generator": models.build_generator, "energy": models.build_energy}
    for role in roles:  # constructs the Linen modules (nothing is traced); ConfigError if bad
        builders[role](config, info)


def _flatten(tree: Any, prefix: str) -> Dict[str, Any]:
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: tree}


def _lookup(tree: Optional[Mapping[str, Any]], key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, Mapping) else None
    return tree


def against_checkpoint(config: ml_collections.ConfigDict, saved: Optional[Mapping[str, Any]], *,
                       directory: str = "", keys: Sequence[str] = RESUME_KEYS) -> None:
    """Raises ConfigError when `config` differs from a checkpoint's config in `keys`.

    Args:
      config: this run's config (a ConfigDict or the same as nested dicts).
      saved: the checkpoint's metadata as written by training ({'config': {...}, ...}, e.g.
        `Checkpoints.step_metadata(step)` or `Checkpoints.metadata()`), or the saved config
        itself; None or {} (no metadata) checks nothing.
      directory: the checkpoint directory, named in the message.
      keys: the entries that must agree: RESUME_KEYS for resuming training, SAMPLE_KEYS for
        sampling. A dict entry (e.g. 'model') is compared leaf by leaf; a key missing on both
        sides agrees.
    """
    if not saved:
        return
    saved_config = saved.get("config", saved)
    # Compared as JSON, the form the metadata was saved in (tuples become lists).
    current = json.loads(config.to_json_best_effort() if hasattr(config, "to_json_best_effort")
                         else json.dumps(config))
    where = f"the checkpoint in {directory}" if directory else "the checkpoint"
    old, new = _lookup(saved_config, "train.criterion"), _lookup(current, "train.criterion")
    if old is not None and (old == EBM_CRITERION) != (new == EBM_CRITERION):
        raise ConfigError(f"config.train.criterion={new!r} but {where} was written with "
                          f"config.train.criterion={old!r} (an energy-only EBM's state and a "
                          "GEBM's differ); use the checkpoint's value or a new --workdir")
    if new != EBM_CRITERION and "model" in keys:  # training's resume: the plateau state
        from kale_jax.train import plateau  # pylint: disable=g-import-not-at-top
        plateau.check_resume(saved_config, current, where)
    for key in keys:
        old, new = _flatten(_lookup(saved_config, key), key), _flatten(_lookup(current, key), key)
        for leaf in sorted(set(old) | set(new)):
            if leaf not in FREE_KEYS and old.get(leaf) != new.get(leaf):
                raise ConfigError(f"config.{leaf}={new.get(leaf)!r} but {where} was written with "
                                  f"config.{leaf}={old.get(leaf)!r}; use the checkpoint's value "
                                  "or a new --workdir")


def workdir(path: str) -> None:
    """Raises CheckpointError unless `path` is (or can be made) a writable directory.

    Creates nothing: a bad --workdir fails before anything is compiled or written.
    """
    if not path:
        raise CheckpointError("--workdir is empty; pass a directory for checkpoints and metrics")
    path = os.path.abspath(path)
    probe = path
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is" if probe == path else f"is under {probe}, which is"
        raise CheckpointError(f"--workdir={path} {what} not a directory; pass a directory path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CheckpointError(f"--workdir={path}: no permission to write in {probe}; pass a "
                              "writable directory")
