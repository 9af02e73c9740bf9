"""kale_jax: Generalized Energy-Based Models trained with KALE, in JAX and Flax.

Modules (import what you use; nothing here does I/O at import):
  kale_jax.kale       the KALE objective, estimators, log-partition, penalties
  kale_jax.hmc        latent MCMC: sample() and its kernels
  kale_jax.latent     the GEBM latent posterior potential
  kale_jax.ebm        the energy-only EBM baseline: data-space Langevin, replay buffer, its step
  kale_jax.networks   Flax Linen generators and energies, by name
  kale_jax.data       embedded and tfds datasets
  kale_jax.train      training: state, steps, device parallelism, train_and_evaluate
  kale_jax.metrics    MMD, FID/KID, KALE over datasets
"""

__version__ = "0.1.0"
