"""Latent-space MCMC kernels as small composable pieces (shaped like blackjax's mcmc).

Each kernel module (ula, mala, hmc, kla, imh) has its NamedTuple state and info, `init(position,
potential_fn, ...)` and `build_kernel(...)` returning `kernel(key, state, potential_fn,
step_size) -> (state, info)`, over batches of chains (leading axis). Shared pieces: `noise`
(per-chain keys folded with the step index), `proposals` (Langevin move, NaN-safe MH test),
`step_size` (dual averaging, decay schedule), `run` (warm-up and sampling loops), `registry`
(kernels by name), `diagnostics` (effective sample size). `kale_jax.hmc.sample` is the front.

Targets are densities proportional to exp(-U(z)); `potential_fn` maps positions (chains, ...) to
U (chains,) and must not couple chains.
"""
from kale_jax.mcmc import diagnostics, hmc, imh, kla, mala, noise, proposals, registry, run
from kale_jax.mcmc import step_size, ula
from kale_jax.mcmc.registry import KernelSpec, adaptive_names, get, names, register, unregister

__all__ = [
    'KernelSpec', 'adaptive_names', 'diagnostics', 'get', 'hmc', 'imh', 'kla', 'mala', 'names', 'noise',
    'proposals', 'register', 'registry', 'run', 'step_size', 'ula', 'unregister',
]
