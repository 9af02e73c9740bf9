"""Normalizing flows with exact log densities: RealNVP and MAF, usable as GEBM bases.

A flow is a bijection f: R^D -> R^D pushing the base density N(0, I_D) forward; the model
density is log p(x) = log N(f^{-1}(x); 0, I) + log |det d f^{-1}(x) / dx|. Both modules here:

* `flow.apply(variables, z, train=...)`   the generator view: latents z (N, D) -> data x (N, D),
  so a flow drops into the generator registry and the KALE training steps unchanged
  (the latent dimension equals the data dimension D);
* `method='forward'`   z -> (x, log|det dx/dz|) with shapes (N, D), (N,);
* `method='inverse'`   x -> (z, log|det dz/dx|);
* `method='log_prob'`  x -> log p(x), (N,) in nats;
* `method='sample'`    (key, n) -> n samples, (n, D).

Layers (from latent to data): `num_layers` transforms, then one element-wise affine map with a
learned shift and log-scale per dimension. Every transform starts as the identity (its output
layer is zero-initialised), so an untrained flow is N(0, I). There is no mutable state (no
BatchNorm), so 'batch_stats' is empty and `train` changes nothing; `axis_name` is accepted only
because the training code passes it to every generator.

RealNVP (Dinh et al. 2017): affine coupling layers with alternating binary masks; layer i keeps
the dimensions d with (d + i) even and transforms the others by x = u * exp(s) + t, where
(s, t) = MLP(kept dimensions). For D = 1 the layers that transform the single dimension see no
input, so they reduce to learned element-wise affine maps.

MAF (Papamakarios et al. 2017): each transform is a MADE (Germain et al. 2015) giving, for the
i-th dimension in that block's order, (mu_i, alpha_i) as functions of the earlier ones; data are
x_i = u_i * exp(alpha_i) + mu_i. The order is reversed from one block to the next. Density
evaluation is one pass per block; sampling (the generator view) takes D passes per block.

Log-scales pass through a soft bound c * tanh(s / c) (c = `scale_bound`), which keeps early
training from exploding without changing the exactness of the density.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kale_jax import checks
from kale_jax.networks import common

Array = jax.Array

_INIT = common.uniform_variance_scaling(1.0, "fan_in")
_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Array) -> Array:
    """log N(z; 0, I): (N, D) -> (N,)."""
    return -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * z.shape[-1] * _LOG_2PI


def _soft_bound(s: Array, bound: float) -> Array:
    return bound * jnp.tanh(s / bound)


def _check_flow(module: nn.Module) -> None:
    owner = type(module).__name__
    common.check_positive(owner, "dim", module.dim)
    common.check_positive(owner, "num_layers", module.num_layers)
    common.check_positive(owner, "hidden", module.hidden)
    common.check_depth(owner, module.depth)
    common.get_activation(owner, "activation", module.activation)
    checks.check_positive(module.scale_bound, f"{owner}.scale_bound")


def _check_input(owner: str, x: Array, dim: int) -> None:
    if x.ndim != 2 or x.shape[-1] != dim:
        raise ValueError(f"{owner}: inputs must have shape (N, {dim}) (dim={dim}); got {x.shape}")


class _Flow(nn.Module):
    """Shared attributes and interface; subclasses define setup(), _layer_forward and
    _layer_inverse (and their own num_layers default).

    Attributes:
      dim: data (and latent) dimension D.
      num_layers: coupling layers (RealNVP) or MADE blocks (MAF).
      hidden, depth, activation: each conditioner network (depth hidden layers of `hidden` units).
      scale_bound: soft bound c on each log-scale, c * tanh(s / c).
      axis_name: accepted and ignored (no cross-example state).
    """
    dim: int = 2
    num_layers: int = 6
    hidden: int = 64
    depth: int = 2
    activation: str = "relu"
    scale_bound: float = 3.0
    axis_name: Optional[str] = None
    input_kind: ClassVar[str] = "vector"  # models vectors (networks.input_kind)

    def __post_init__(self):
        _check_flow(self)
        super().__post_init__()

    def _affine(self):
        return self.shift, _soft_bound(self.log_scale, self.scale_bound)

    def forward(self, z: Array) -> Tuple[Array, Array]:
        """Latents (N, D) -> (data (N, D), log|det dx/dz| (N,))."""
        _check_input(type(self).__name__, z, self.dim)
        shift, log_scale = self._affine()  # also runs setup() outside any loop trace
        log_det = jnp.zeros(z.shape[:1], z.dtype)
        x = z
        for i in range(self.num_layers):
            x, ld = self._layer_forward(i, x)
            log_det = log_det + ld
        return x * jnp.exp(log_scale) + shift, log_det + jnp.sum(log_scale)

    def inverse(self, x: Array) -> Tuple[Array, Array]:
        """Data (N, D) -> (latents (N, D), log|det dz/dx| (N,))."""
        _check_input(type(self).__name__, x, self.dim)
        shift, log_scale = self._affine()
        z = (x - shift) * jnp.exp(-log_scale)
        log_det = jnp.full(x.shape[:1], -jnp.sum(log_scale), x.dtype)
        for i in reversed(range(self.num_layers)):
            z, ld = self._layer_inverse(i, z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: Array) -> Array:
        """Exact log density of data x (N, D): (N,) in nats."""
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, key: Array, num_samples: int) -> Array:
        """`num_samples` draws (num_samples, D): f(z) with z ~ N(0, I)."""
        z = jax.random.normal(key, (num_samples, self.dim), jnp.float32)
        return self.forward(z)[0]

    def __call__(self, z: Array, *, train: bool = False) -> Array:
        """The generator view: latents (N, D) -> data (N, D)."""
        del train  # no mutable state
        return self.forward(z)[0]

    def _setup_affine(self):
        self.shift = self.param("shift", nn.initializers.zeros, (self.dim,))
        self.log_scale = self.param("log_scale", nn.initializers.zeros, (self.dim,))


class _Conditioner(nn.Module):
    """MLP (N, D) -> (s, t), each (N, D); the output layer starts at zero."""
    dim: int
    hidden: int
    depth: int
    activation: str

    @nn.compact
    def __call__(self, h: Array) -> Tuple[Array, Array]:
        act = common.get_activation(type(self).__name__, "activation", self.activation)
        for i in range(self.depth):
            h = act(nn.Dense(self.hidden, kernel_init=_INIT, name=f"dense{i}")(h))
        out = nn.Dense(2 * self.dim, kernel_init=nn.initializers.zeros, name="out")(h)
        return out[:, :self.dim], out[:, self.dim:]


def coupling_mask(dim: int, layer: int) -> np.ndarray:
    """RealNVP's mask of layer `layer`: float32 (dim,), 1 on the kept (conditioning) dims."""
    return ((np.arange(dim) + layer) % 2 == 0).astype(np.float32)


class RealNVP(_Flow):
    """RealNVP with affine couplings and alternating masks (see the module docstring); attributes
    as _Flow's, num_layers coupling layers whose conditioners are MLPs."""
    num_layers: int = 6

    def setup(self):
        self.conditioners = [
            _Conditioner(self.dim, self.hidden, self.depth, self.activation, name=f"coupling{i}")
            for i in range(self.num_layers)]
        self._setup_affine()

    def _params(self, i: int, kept: Array) -> Tuple[Array, Array, Array]:
        mask = jnp.asarray(coupling_mask(self.dim, i))
        s, t = self.conditioners[i](kept * mask)
        s = _soft_bound(s, self.scale_bound) * (1.0 - mask)
        return mask, s, t * (1.0 - mask)

    def _layer_forward(self, i: int, u: Array) -> Tuple[Array, Array]:
        mask, s, t = self._params(i, u)
        return u * jnp.exp(s) + t, jnp.sum(s, axis=-1)  # kept dims: s = t = 0

    def _layer_inverse(self, i: int, x: Array) -> Tuple[Array, Array]:
        mask, s, t = self._params(i, x)  # kept dims equal in x and u
        return (x - t) * jnp.exp(-s), -jnp.sum(s, axis=-1)


def made_degrees(dim: int, hidden: int, depth: int, reverse: bool) -> Tuple[np.ndarray, ...]:
    """MADE degrees: inputs (dim,) in 1..dim (in this block's order), each hidden layer
    (hidden,) cycling through 1..max(dim - 1, 1). Output i depends on inputs of degree < its own.
    """
    order = np.arange(1, dim + 1)
    if reverse:
        order = order[::-1]
    hidden_degrees = np.arange(hidden) % max(dim - 1, 1) + 1
    return (order,) + tuple(hidden_degrees for _ in range(depth))


def made_masks(dim: int, hidden: int, depth: int, reverse: bool) -> Tuple[np.ndarray, ...]:
    """The 0/1 masks (in, out) of a MADE's depth + 1 layers (last: to the dim outputs)."""
    degrees = made_degrees(dim, hidden, depth, reverse)
    masks = [(degrees[k][:, None] <= degrees[k + 1][None, :]).astype(np.float32)
             for k in range(depth)]
    masks.append((degrees[-1][:, None] < degrees[0][None, :]).astype(np.float32))
    return tuple(masks)


class MAF(_Flow):
    """Masked autoregressive flow of MADE blocks, order reversed between blocks; attributes as
    _Flow's, num_layers MADE blocks (depth masked hidden layers each), log-scales alpha."""
    num_layers: int = 5

    def setup(self):
        # Plain parameters (not submodules) so that the sequential sampling loop is a pure
        # function that lax.fori_loop can run.
        blocks = []
        for b in range(self.num_layers):
            layers = []
            widths = [self.dim] + [self.hidden] * self.depth
            for k in range(self.depth):
                layers.append((self.param(f"made{b}_kernel{k}", _INIT, (widths[k], widths[k + 1])),
                               self.param(f"made{b}_bias{k}", nn.initializers.zeros,
                                          (widths[k + 1],))))
            layers.append((self.param(f"made{b}_kernel_out", nn.initializers.zeros,
                                      (widths[-1], 2 * self.dim)),
                           self.param(f"made{b}_bias_out", nn.initializers.zeros,
                                      (2 * self.dim,))))
            blocks.append(tuple(layers))
        self.blocks = tuple(blocks)
        self._setup_affine()

    def _made(self, b: int, x: Array) -> Tuple[Array, Array]:
        masks = made_masks(self.dim, self.hidden, self.depth, reverse=b % 2 == 1)
        act = common.get_activation(type(self).__name__, "activation", self.activation)
        h = x
        for k, (kernel, bias) in enumerate(self.blocks[b]):
            mask = masks[k]
            if k == self.depth:  # the output layer gives (mu, alpha): the mask applies to both
                mask = np.concatenate([mask, mask], axis=1)
            h = h @ (kernel * jnp.asarray(mask)) + bias
            if k < self.depth:
                h = act(h)
        mu, alpha = h[:, :self.dim], h[:, self.dim:]
        return mu, _soft_bound(alpha, self.scale_bound)

    def _layer_forward(self, b: int, u: Array) -> Tuple[Array, Array]:
        # x_i = u_i exp(alpha_i(x_<i)) + mu_i(x_<i): after k passes the first k dims (in the
        # block's order) are exact, so D passes give x.
        def body(_, x):
            mu, alpha = self._made(b, x)
            return u * jnp.exp(alpha) + mu

        x = jax.lax.fori_loop(0, self.dim, body, jnp.zeros_like(u))
        _, alpha = self._made(b, x)
        return x, jnp.sum(alpha, axis=-1)

    def _layer_inverse(self, b: int, x: Array) -> Tuple[Array, Array]:
        mu, alpha = self._made(b, x)
        return (x - mu) * jnp.exp(-alpha), -jnp.sum(alpha, axis=-1)


FLOWS = {"realnvp": RealNVP, "maf": MAF}


def is_flow(module: Any) -> bool:
    """True for a module with an exact log density (a flow from this file)."""
    return isinstance(module, _Flow)
