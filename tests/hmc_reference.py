"""`kale_jax.hmc.sample` outputs for fixed keys, recorded before the kernels moved to kale_jax.mcmc.

`python tests/hmc_reference.py` (from the repository root) runs every case in CASES and writes
tests/data/hmc_reference.npz; tests/test_hmc.py reruns the cases and compares. The file was
written by the code of commit aa35fc8 (the monolithic hmc.py); rerun this script only to record a
deliberate change of results, and say so in the commit.
"""
import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'hmc_reference.npz')
FIELDS = ('position', 'potential', 'acceptance_rate', 'num_nonfinite', 'step_size', 'trace',
          'trace_potential', 'trace_acceptance')
NUM_CHAINS = 3


def banana(z):
    """A curved 2-D target: U = z0^2 / 8 + (z1 + z0^2 / 2 - 1)^2 / 2; (chains, 2) -> (chains,)."""
    return z[:, 0] ** 2 / 8.0 + 0.5 * (z[:, 1] + 0.5 * z[:, 0] ** 2 - 1.0) ** 2


_CONV_KERNEL = np.asarray(
    np.random.default_rng(0).normal(size=(3, 3, 2, 3)) * 0.3, np.float32)


def conv_potential(z):
    """|z|^2/2 + softplus of a strided convolution of z seen as a 4x4x2 image: (chains, 32)."""
    x = z.reshape(z.shape[0], 4, 4, 2)
    h = jax.lax.conv_general_dilated(x, jnp.asarray(_CONV_KERNEL), (2, 2), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return 0.5 * jnp.sum(z * z, axis=1) + jnp.sum(jax.nn.softplus(h), axis=(1, 2, 3))


# name -> (potential, dimension, options of hmc.sample)
CASES = {
    'ula': (banana, 2, dict(kernel='ula', num_steps=20, step_size=0.2, thin=5)),
    'mala': (banana, 2, dict(kernel='mala', num_steps=20, step_size=0.5, thin=5)),
    'hmc': (banana, 2, dict(kernel='hmc', num_steps=20, step_size=0.3, num_leapfrog_steps=3,
                            thin=5)),
    'kla': (banana, 2, dict(kernel='kla', num_steps=20, step_size=0.4, friction=0.5, thin=5)),
    'imh': (banana, 2, dict(kernel='imh', num_steps=20, thin=5)),
    'mala_adapted': (banana, 2, dict(kernel='mala', num_steps=10, step_size=0.1,
                                     num_adaptation_steps=10, thin=2)),
    'hmc_adapted': (banana, 2, dict(kernel='hmc', num_steps=10, step_size=0.1,
                                    num_leapfrog_steps=2, num_adaptation_steps=10)),
    'ula_decay': (banana, 2, dict(kernel='ula', num_steps=20, step_size=0.3, decay_factor=0.5,
                                  decay_every=7, thin=3)),
    'kla_per_chain_step': (banana, 2, dict(kernel='kla', num_steps=20,
                                           step_size=np.array([0.1, 0.3, 0.6], np.float32))),
    'mala_conv': (conv_potential, 32, dict(kernel='mala', num_steps=10, step_size=0.2, thin=5)),
}


def run_case(sample, name):
    """{field: array} of `sample` (kale_jax.hmc.sample) on case `name`; None fields left out."""
    potential, dim, options = CASES[name]
    start = jax.random.normal(jax.random.key(1), (NUM_CHAINS, dim))
    run = jax.jit(lambda key, z: sample(key, potential, z, **options))
    result = run(jax.random.key(2), start)
    return {field: np.asarray(getattr(result, field)) for field in FIELDS
            if getattr(result, field) is not None}


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from kale_jax import hmc
    arrays = {}
    for name in CASES:
        for field, value in run_case(hmc.sample, name).items():
            arrays[f'{name}/{field}'] = value
    np.savez(PATH, **arrays)
    print(f'wrote {len(arrays)} arrays to {PATH}')


if __name__ == '__main__':
    main()
