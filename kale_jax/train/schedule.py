"""The training schedule: how many energy steps come before each base step.

This is the paper's Algorithm 1 as its authors ran it (docs/design.md): before base step t
the energy takes `n_critic_warmup` steps (100) if t is 0 or a multiple of `warmup_every` (500),
and `n_critic` steps (5) otherwise. The warm-up rounds let the energy catch up with the base, first
from its random initialisation and then periodically as the base moves.
"""
from __future__ import annotations

import ml_collections


def energy_steps_before(base_step: int, config: ml_collections.ConfigDict) -> int:
    """Number of energy steps to take before base step `base_step` (0-based).

    Args:
      base_step: index of the coming base step (0 for the first).
      config: the full config; reads config.train.{n_critic, n_critic_warmup, warmup_every}.
    Returns:
      config.train.n_critic_warmup if base_step % warmup_every == 0 (this includes base step 0),
      else config.train.n_critic.
    """
    if base_step < 0:
        raise ValueError(f"base_step must be >= 0, got {base_step}")
    train = config.train
    if base_step % train.warmup_every == 0:
        return train.n_critic_warmup
    return train.n_critic


def energy_steps_until(base_step: int, config: ml_collections.ConfigDict) -> int:
    """Total energy steps taken before base step `base_step` starts (sum of the rule above).

    Used to check a restored state: its energy-step counter must equal this for its base step.
    """
    train = config.train
    num_warmups = -(-base_step // train.warmup_every)  # base steps 0, w, 2w, ... below base_step
    return num_warmups * train.n_critic_warmup + (base_step - num_warmups) * train.n_critic
