"""kale_jax: Generalized Energy-Based Models trained with KALE, in JAX and Flax.

    gebm = kale_jax.load("workdirs/ring")        # a trained GEBM (kale_jax.gebm_model.GEBM)

Modules (import what you use; nothing here does I/O or imports jax at import):
  kale_jax.kale        the KALE objective, estimators, log-partition, penalties
  kale_jax.hmc         latent MCMC: sample() and its kernels
  kale_jax.latent      the GEBM latent posterior potential
  kale_jax.sampling    chunked GEBM sampling sharded over devices (Sampler)
  kale_jax.gebm_model  a trained GEBM loaded from a workdir (`load`, below)
  kale_jax.ebm         the energy-only EBM baseline: data-space Langevin, replay buffer, its step
  kale_jax.networks    Flax Linen generators and energies, by name
  kale_jax.data        embedded and tfds datasets
  kale_jax.train       training: state, steps, device parallelism, train_and_evaluate
  kale_jax.metrics     MMD, FID/KID, KALE over datasets
"""

__version__ = "0.1.0"


def load(workdir, step=None):
    """Loads the GEBM trained in `workdir`, read-only (kale_jax.gebm_model.load).

    Args:
      workdir: a training run's directory (config.json and checkpoints/).
      step: the checkpoint's base step; None for the latest committed one.
    Returns:
      a kale_jax.gebm_model.GEBM: config, networks, variables, log_partition, and
      sample(key, num_samples, *, kernel, num_steps, beta, ...), energy(x), base(z).
    """
    from kale_jax import gebm_model  # pylint: disable=g-import-not-at-top
    return gebm_model.load(workdir, step)
