"""Small assertions shared by several test modules (import as `from helpers import ...`; pytest
puts tests/ on sys.path, as for conftest.py)."""
import jax
import jax.numpy as jnp
import numpy as np


def max_abs_difference(a, b) -> float:
    """Largest absolute difference between two pytrees of arrays of the same structure (float64)."""
    diffs = jax.tree_util.tree_map(
        lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
        a, b)
    return max(jax.tree_util.tree_leaves(diffs))


def one_error_line(stderr: str) -> str:
    """The binary's user-error line: the last line, 'error: ...', and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), stderr[-3000:]
    return last


_CONV_KERNEL = jax.random.normal(jax.random.key(24), (3, 3, 2, 3)) * 0.3


def conv_potential(z):
    """|z|^2/2 + an energy with a strided convolution: (chains, 32) -> (chains,)."""
    x = z.reshape(z.shape[0], 4, 4, 2)
    h = jax.lax.conv_general_dilated(x, _CONV_KERNEL, (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return 0.5 * jnp.sum(z * z, axis=1) + jnp.sum(jax.nn.softplus(h), axis=(1, 2, 3))
