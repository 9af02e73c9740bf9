r"""Parameter counts of the default image networks: python -m experiments.param_counts

Prints a markdown table of trainable parameters ('params' collection; BatchNorm running averages
and spectral-norm vectors are state, not counted) of each generator and energy at image sizes 32
and 64 with 3 channels and latent dimension 100, for both network families ('ours' and
'authors', the `variant` of kale_jax.networks; at 32x32 the authors' rows are the parameter
counts of the authors' PyTorch networks). Shapes come from jax.eval_shape, so nothing is
initialised or computed.
"""
from __future__ import annotations

from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from kale_jax import networks


class Row(NamedTuple):
    """One line of the table: a network family at one image size."""
    network: str
    image_size: int
    generator_params: int
    energy_params: int
    variant: str = "ours"


def parameter_count(module: Any, input_shape: Tuple[int, ...]) -> int:
    """Trainable parameters of a generator or energy called on inputs of `input_shape`."""
    example = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(
        lambda x: module.init(jax.random.PRNGKey(0), x, train=False), example)
    return networks.count_parameters(variables["params"])


def parameter_rows(names: Sequence[str] = networks.IMAGE_NETWORK_NAMES,
                   image_sizes: Sequence[int] = (32, 64), *, latent_dim: int = 100,
                   channels: int = 3, generator_kwargs: Optional[Mapping[str, Any]] = None,
                   energy_kwargs: Optional[Mapping[str, Any]] = None,
                   variants: Sequence[str] = ("ours",)) -> List[Row]:
    """Parameter counts of each (variant, image network, size).

    generator_kwargs / energy_kwargs are extra keyword arguments for every network (e.g.
    {'width': 8}); by default each network has its own (paper or authors') width. variants:
    the network families, 'ours' and / or 'authors' (kale_jax.networks.VARIANTS).
    """
    rows = []
    for variant in variants:
        for name in names:
            for size in image_sizes:
                generator = networks.get_generator(name, image_size=size, channels=channels,
                                                   variant=variant,
                                                   **dict(generator_kwargs or {}))
                energy = networks.get_energy(name, image_size=size, channels=channels,
                                             variant=variant, **dict(energy_kwargs or {}))
                rows.append(Row(name, size, parameter_count(generator, (1, latent_dim)),
                                parameter_count(energy, (1, size, size, channels)), variant))
    return rows


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table (counts with thousands separators)."""
    lines = ["| variant | network | image size | generator params | energy params |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r.variant} | {r.network} | {r.image_size} | {r.generator_params:,} "
              f"| {r.energy_params:,} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    print(markdown_table(parameter_rows(variants=networks.VARIANTS)))


if __name__ == "__main__":
    main()
