"""Tests of experiments.param_counts against initialised networks and hand counts."""
import jax
import jax.numpy as jnp
import numpy as np

from experiments import param_counts
from kale_jax import networks

W, D, C = 4, 5, 2  # width, latent dimension, channels of the tiny networks


def dcgan_counts_32(w, d, c):
    """DCGAN at 32 by hand: layers before BatchNorm have no bias; BatchNorm has scale + shift."""
    generator = (d * 16 * 4 * w + 2 * 4 * w  # dense to 4x4x4w, BatchNorm
                 + 16 * 4 * w * 2 * w + 2 * 2 * w  # 4x4 transposed conv to 2w, BatchNorm
                 + 16 * 2 * w * w + 2 * w  # to w, BatchNorm
                 + 16 * w * c + c)  # to c channels, with bias
    energy = (16 * c * w + w + 16 * w * 2 * w + 2 * w + 16 * 2 * w * 4 * w + 4 * w  # 4x4 convs
              + 16 * 4 * w + 1)  # dense on 4x4x4w
    return generator, energy


def sngan_counts_32(w, d, c):
    """SNGAN standard CNN at 32 by hand."""
    generator = (d * 16 * 8 * w + 2 * 8 * w
                 + 16 * 8 * w * 4 * w + 2 * 4 * w
                 + 16 * 4 * w * 2 * w + 2 * 2 * w
                 + 16 * 2 * w * w + 2 * w
                 + 9 * w * c + c)  # 3x3 conv to c channels
    energy = (9 * c * w + w + 16 * w * w + w  # 3x3 conv and 4x4 stride-2 conv per stage
              + 9 * w * 2 * w + 2 * w + 16 * 2 * w * 2 * w + 2 * w
              + 9 * 2 * w * 4 * w + 4 * w + 16 * 4 * w * 4 * w + 4 * w
              + 9 * 4 * w * 8 * w + 8 * w  # 3x3 conv to 8w
              + 16 * 8 * w + 1)  # dense on 4x4x8w
    return generator, energy


def test_rows_match_hand_counts():
    rows = param_counts.parameter_rows(("dcgan", "sngan"), (32,), latent_dim=D, channels=C,
                                       generator_kwargs={"width": W}, energy_kwargs={"width": W})
    assert rows == [param_counts.Row("dcgan", 32, *dcgan_counts_32(W, D, C)),
                    param_counts.Row("sngan", 32, *sngan_counts_32(W, D, C))]


def test_rows_match_an_initialised_network():
    (row,) = param_counts.parameter_rows(("dcgan",), (64,), latent_dim=D, channels=C,
                                         generator_kwargs={"width": W},
                                         energy_kwargs={"width": W})
    generator = networks.get_generator("dcgan", image_size=64, channels=C, width=W)
    energy = networks.get_energy("dcgan", image_size=64, channels=C, width=W)
    g_vars = networks.init_variables(generator, jax.random.PRNGKey(0), jnp.zeros((1, D)))
    e_vars = networks.init_variables(energy, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, C)))
    count = lambda tree: sum(np.asarray(leaf).size for leaf in jax.tree_util.tree_leaves(tree))
    assert row.generator_params == count(g_vars["params"])
    assert row.energy_params == count(e_vars["params"])
    # BatchNorm running averages are state, not parameters.
    assert count(g_vars["batch_stats"]) > 0


def test_markdown_table_lists_every_row():
    rows = [param_counts.Row("dcgan", 32, 1234567, 89),
            param_counts.Row("resnet", 64, 1, 2, "authors")]
    assert param_counts.markdown_table(rows).splitlines() == [
        "| variant | network | image size | generator params | energy params |",
        "|---|---|---:|---:|---:|",
        "| ours | dcgan | 32 | 1,234,567 | 89 |",
        "| authors | resnet | 64 | 1 | 2 |",
    ]


# The authors' PyTorch networks (MichaelArbel/GeneralizedEBM, models/generator.py and
# discriminator.py: 'dcgan', 'sngan', 'resnet-sn') at 32x32, latent 100: trainable parameters
# (generator, energy), as counted by sum(p.numel() for p in net.parameters()) (issue 19).
AUTHORS_COUNTS_32 = {"dcgan": (3_573_824, 2_759_424), "sngan": (3_584_003, 5_860_865),
                     "resnet": (1_097_603, 1_053_825)}


def test_the_authors_variants_have_the_authors_parameter_counts(capsys):
    rows = param_counts.parameter_rows(image_sizes=(32,), variants=("authors",))
    assert {r.network: (r.generator_params, r.energy_params) for r in rows} == AUTHORS_COUNTS_32
    # The binary prints both families, the authors' rows with these counts.
    param_counts.main()
    lines = capsys.readouterr().out.splitlines()
    for name, (g, e) in AUTHORS_COUNTS_32.items():
        assert f"| authors | {name} | 32 | {g:,} | {e:,} |" in lines
    assert sum(line.startswith("| ours |") for line in lines) == 6
