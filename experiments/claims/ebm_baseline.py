"""The EBM baseline of the toy claims: configs/ebm.py trained per seed, sampled by Langevin.

`sampler(name, ...)` returns draw(seed, num) -> (num, *shape) samples of the EBM trained on data
set `name` with that seed (WORKDIR/<name>_s<seed>_ebm[_tiny], trained if missing, reused
otherwise): chains from fresh starts, the config's evaluation length (ebm.eval_steps) of Langevin
with the training sampler's settings, as the EBM's own evaluation draws them.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

from experiments.claims import common

TINY = {"train.num_steps": 4, "train.eval_every": 10**9, "train.tensorboard": False,
        "ebm.langevin_steps": 3, "ebm.eval_steps": 5, "ebm.buffer_size": 64,
        "eval.num_samples": 32, "eval.num_heldout": 32}
_SAMPLE_STREAM = 0xEB


def _config(name: str, seed: int, tiny: bool):
    if tiny:
        config = common.config_for(f"test:ebm_{name}", dict(TINY))
    else:
        config = common.config_for(f"ebm:{name}", {"train.tensorboard": False})
    config.seed = seed
    return config


def sampler(name: str, *, tiny: bool, workdir: str, log: Callable) -> Callable:
    """draw(seed, num) for the EBM on `name`; trains each seed's EBM on first use."""
    from kale_jax import ebm  # pylint: disable=g-import-not-at-top
    from kale_jax.train import ebm_loop  # pylint: disable=g-import-not-at-top

    def draw(seed: int, num: int) -> np.ndarray:
        config = _config(name, seed, tiny)
        run_dir = os.path.join(workdir, f"{name}_s{seed}_ebm" + ("_tiny" if tiny else ""))
        state, _, _ = common.train_once(lambda: ebm_loop.train_ebm(
            config, run_dir, config_source="experiments.claims"), run_dir, log,
            f"{name} (ebm, seed {seed})")
        trainer = ebm_loop.EBMTrainer(config, jax.devices()[:1])
        key = jax.random.fold_in(jax.random.PRNGKey(seed), _SAMPLE_STREAM)
        run = jax.jit(lambda p, s, k: ebm.sample(k, trainer.spec, p, s, num,
                                                 tuple(trainer.info.shape),
                                                 config.ebm.eval_steps))
        return np.asarray(run(state.params, state.energy_state, key))

    return draw
