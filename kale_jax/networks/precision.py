"""Mixed precision for any network: float32 parameters and state, a lower compute dtype inside.

    energy = with_dtype(networks.get_energy('sngan', image_size=32, channels=3), 'bfloat16')
    variables = init_variables(energy, key, x[:1])       # the unwrapped module's tree, float32
    e = energy.apply(variables, x, train=False)          # convs and matmuls in bfloat16, e float32

`Precision` wraps a generator or energy module (the policy of the jmp library: parameter dtype
float32, compute dtype `dtype`, output dtype float32):

* its 'params' are read cast to the compute dtype (nn.map_variables), so every layer that
  infers its dtype from its inputs and kernel (flax's default, dtype=None) computes in it, and
  gradients flow back to the float32 parameters through the cast;
* floating inputs are cast to the compute dtype, floating outputs back to float32;
* mutable state ('batch_stats': BatchNorm averages, spectral-norm vectors) is read as stored,
  float32, and written back as float32 (flax BatchNorm reduces in float32 anyway);
* it shares its scope with the wrapped module (nn.share_scope), so the variable tree is the
  unwrapped module's, name for name, all float32: checkpoints do not depend on the dtype.

The wrapper forwards only `__call__`; flows (whose 'log_prob', 'forward', ... are separate
methods) are refused under a compute dtype other than float32 (kale_jax.train.validate).
"""
from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# config.model.dtype values; 'float32' builds the networks unwrapped.
DTYPES: Tuple[str, ...] = ("float32", "bfloat16")


def cast_floating(tree: Any, dtype: Any) -> Any:
    """`tree` with every floating-point array leaf cast to `dtype` (other leaves unchanged)."""
    def cast(leaf):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(leaf, dtype)
        return leaf
    return jax.tree_util.tree_map(cast, tree)


class Precision(nn.Module):
    """Runs `module` with its parameters and inputs in `dtype`; outputs and state in float32.

    Attributes:
      module: any Linen module called as module(*args, **kwargs) (a generator or an energy).
      dtype: the compute dtype, e.g. 'bfloat16' (a name or a jnp dtype).
    """
    module: nn.Module
    dtype: Any = "bfloat16"

    def setup(self):
        # The wrapped module's variables live in this module's scope: no extra name level.
        nn.share_scope(self, self.module)

    def __call__(self, *args, **kwargs):
        """module(*args, **kwargs) in the compute dtype.

        Args:
          *args, **kwargs: the wrapped module's arguments; floating arrays among them (latents
            (N, d), images (N, H, W, C), ...) are cast to the compute dtype, others (train=...)
            passed as they are.
        Returns:
          the wrapped module's output with floating arrays cast to float32 (same shapes).
        """
        dtype = jnp.dtype(self.dtype)
        if self.is_initializing():
            # Parameters are created in float32 by the wrapped module, exactly as unwrapped
            # (casting them on the way in would round the stored initial values).
            return cast_floating(self.module(*args, **kwargs), jnp.float32)
        stats_mutable = self.is_mutable_collection("batch_stats")

        def to_compute(tree):
            return {c: cast_floating(v, dtype) if c == "params" else v for c, v in tree.items()}

        def to_storage(tree):
            return {c: cast_floating(v, jnp.float32) for c, v in tree.items()}

        run = nn.map_variables(
            lambda mdl, *a, **k: mdl.module(*a, **k), ["params", "batch_stats"],
            trans_in_fn=to_compute, trans_out_fn=to_storage,
            mutable=stats_mutable)
        out = run(self, *cast_floating(args, dtype), **cast_floating(kwargs, dtype))
        return cast_floating(out, jnp.float32)


def with_dtype(module: nn.Module, dtype: str) -> nn.Module:
    """`module` computing in `dtype`: itself for 'float32', else wrapped in Precision.

    Args:
      module: a generator or energy module.
      dtype: one of DTYPES (config.model.dtype).
    Returns:
      a module with the same variable tree (names, shapes, float32) as `module`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: {DTYPES}")
    return module if dtype == "float32" else Precision(module, dtype)
