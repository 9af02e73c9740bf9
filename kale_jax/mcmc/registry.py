"""Kernels by name: what each needs (gradients, a step size) and whether dual averaging applies.

A new kernel is one module (init, build_kernel, its state and info) plus one `register` line
below, or a `register` call from user code.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from kale_jax.mcmc import hmc, imh, kla, mala, ula


class KernelSpec(NamedTuple):
    """How to build and drive one kernel.

    init: init(position, potential_fn, key, **transform) -> state; key is the StepKey of the
      init stream (kale_jax.mcmc.noise.INIT_STEP), for kernels that draw at init.
    build_kernel: build_kernel(**options, **transform) -> kernel(key, state, potential_fn,
      step_size) -> (state, info).
    uses_gradient: the kernel evaluates grad U; init and build_kernel then take
      `grad_transform=` (see kale_jax.mcmc.proposals.value_and_grad).
    uses_step_size: the kernel reads its step_size argument.
    step_size_adaptation: dual averaging applies (needs uses_step_size and an info with
      `acceptance_rate`).
    target_acceptance: default target of dual averaging, in (0, 1), when it applies.
    options: names of build_kernel's keyword options (e.g. 'num_leapfrog_steps').
    """

    init: Callable
    build_kernel: Callable
    uses_gradient: bool
    uses_step_size: bool = True
    step_size_adaptation: bool = False
    target_acceptance: Optional[float] = None
    options: tuple[str, ...] = ()


_KERNELS: dict[str, KernelSpec] = {}


def register(name: str, spec: KernelSpec, *, replace: bool = False) -> None:
    """Make `spec` available as kernel `name` (to kale_jax.hmc.sample and the configs).

    Args:
      name: the kernel's name, a non-empty string.
      spec: its KernelSpec.
      replace: allow replacing an existing kernel of that name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f'name: expected a non-empty string, got {name!r}.')
    if name in _KERNELS and not replace:
        raise ValueError(f'kernel: {name!r} is already registered; pass replace=True to replace.')
    if spec.step_size_adaptation:
        if not spec.uses_step_size:
            raise ValueError(f'kernel {name!r}: step_size_adaptation needs uses_step_size=True.')
        if spec.target_acceptance is None or not 0.0 < spec.target_acceptance < 1.0:
            raise ValueError(
                f'kernel {name!r}: target_acceptance: got {spec.target_acceptance!r}, expected '
                '0 < value < 1 when step_size_adaptation is True.')
    _KERNELS[name] = spec


def unregister(name: str) -> None:
    """Remove kernel `name` (e.g. a test's toy kernel)."""
    get(name)
    del _KERNELS[name]


def get(name: str) -> KernelSpec:
    """The KernelSpec of kernel `name`; ValueError naming the registered kernels otherwise."""
    if not isinstance(name, str) or name not in _KERNELS:
        raise ValueError(f'kernel: got {name!r}, expected one of {names()}.')
    return _KERNELS[name]


def adaptive_names() -> tuple[str, ...]:
    """Registered kernels whose step size dual averaging adapts, in registration order."""
    return tuple(name for name in names() if get(name).step_size_adaptation)


def names() -> tuple[str, ...]:
    """Registered kernel names, in registration order."""
    return tuple(_KERNELS)


register('ula', KernelSpec(ula.init, ula.build_kernel, uses_gradient=True))
register('mala', KernelSpec(mala.init, mala.build_kernel, uses_gradient=True,
                            step_size_adaptation=True, target_acceptance=0.574))
register('hmc', KernelSpec(hmc.init, hmc.build_kernel, uses_gradient=True,
                           step_size_adaptation=True, target_acceptance=0.65,
                           options=('num_leapfrog_steps',)))
register('kla', KernelSpec(kla.init, kla.build_kernel, uses_gradient=True, options=('friction',)))
register('imh', KernelSpec(imh.init, imh.build_kernel, uses_gradient=False, uses_step_size=False))
