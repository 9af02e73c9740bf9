"""Tests of the authors' network variants (kale_jax/networks/authors.py, variant='authors').

Layer layouts and parameter counts are checked with jax.eval_shape (nothing computed); the
numerics on tiny networks (width 8) compiled once per session at LLVM optimisation level 0.
"""
import functools
import math
import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10
from kale_jax import data, networks
from kale_jax.errors import ConfigError
from kale_jax.train import models
from kale_jax.train.validate import validate

NETS = ("dcgan", "sngan", "resnet")
BATCH, LATENT, WIDTH = 4, 8, 8

fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _shapes(module, example):
    """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs (nothing computed)."""
    return jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), example)


def _kernel_shapes(tree):
    return {"/".join(k.key for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


Z100 = jax.ShapeDtypeStruct((1, 100), jnp.float32)
X32 = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)


def test_layers_are_the_authors():
    """Kernel shapes at the authors' widths, 32x32, latent 100 (their models/*.py)."""
    g = _kernel_shapes(_shapes(networks.get_generator("dcgan", variant="authors"), Z100)["params"])
    assert g["dense/kernel"] == (100, 4 * 4 * 512) and "dense/bias" not in g
    assert [g[f"up{i}/kernel"] for i in range(3)] == [(4, 4, 512, 256), (4, 4, 256, 128),
                                                      (4, 4, 128, 64)]
    assert g["out/kernel"] == (1, 1, 64, 3) and "out/bias" not in g  # 1x1, no bias
    e = _shapes(networks.get_energy("dcgan", variant="authors"), X32)
    shapes = _kernel_shapes(e["params"])
    assert [shapes[f"down{i}/kernel"][-1] for i in range(4)] == [64, 128, 256, 512]
    assert shapes["out/kernel"] == (2 * 2 * 512, 1)  # their 2x2 stride-2 conv on the 2x2 map
    assert sorted(e["batch_stats"]) == ["bn_down1", "bn_down2", "bn_down3"]  # not after down0

    g = _kernel_shapes(_shapes(networks.get_generator("sngan", variant="authors"), Z100)["params"])
    assert g["dense/kernel"] == (100, 4 * 4 * 512) and g["dense/bias"] == (4 * 4 * 512,)
    assert g["out/kernel"] == (3, 3, 64, 3)
    e = _kernel_shapes(_shapes(networks.get_energy("sngan", variant="authors"), X32)["params"])
    # Channels double in the stride-2 (4x4) convs: 64-128-128-256-256-512-512.
    assert [e[f"conv{i}/kernel"] for i in range(7)] == [
        (3, 3, 3, 64), (4, 4, 64, 128), (3, 3, 128, 128), (4, 4, 128, 256),
        (3, 3, 256, 256), (4, 4, 256, 512), (3, 3, 512, 512)]
    assert e["out/kernel"] == (4 * 4 * 512, 1)

    g = _kernel_shapes(_shapes(networks.get_generator("resnet", variant="authors"),
                               Z100)["params"])
    assert g["dense/kernel"] == (100, 4 * 4 * 128)
    assert not [k for k in g if "shortcut" in k]  # identity shortcuts
    assert all(g[f"block{i}/conv2/kernel"] == (3, 3, 128, 128) for i in range(3))
    e = _kernel_shapes(_shapes(networks.get_energy("resnet", variant="authors"), X32)["params"])
    assert sorted(k.split("/")[0] for k in e if "shortcut" in k) == ["block0", "block0",
                                                                      "block1", "block1"]
    assert e["out/kernel"] == (128, 1)


def test_spectral_norm_where_the_authors_put_it():
    """sngan: every conv, not the dense layer; resnet energy: every conv and the dense layer;
    dcgan: none (BatchNorm instead)."""
    def normalised(name):
        stats = _shapes(networks.get_energy(name, variant="authors"), X32).get("batch_stats", {})
        return sorted("/".join(k.key for k in path[:-1])
                      for path, _ in jax.tree_util.tree_flatten_with_path(stats)[0]
                      if path[-1].key.endswith("/sigma"))

    assert normalised("sngan") == [f"sn_conv{i}" for i in range(7)]
    resnet = normalised("resnet")
    assert len(resnet) == 4 * 2 + 2 + 1 and resnet[-1] == "sn_out"
    assert normalised("dcgan") == []


@pytest.mark.parametrize("name", NETS)
def test_64x64_extension_shapes(name):
    """At 64 (beyond the authors' code) the networks map to and from 64x64 images."""
    generator = networks.get_generator(name, image_size=64, channels=2, width=WIDTH,
                                       variant="authors")
    energy = networks.get_energy(name, image_size=64, channels=2, width=WIDTH, variant="authors")
    z = jax.ShapeDtypeStruct((BATCH, LATENT), jnp.float32)
    g_vars = _shapes(generator, z)
    for train in (False, True):
        images, _ = jax.eval_shape(lambda v, z: generator.apply(v, z, train=train,
                                                                mutable=["batch_stats"]),
                                   g_vars, z)
        assert images.shape == (BATCH, 64, 64, 2)
        e_vars = _shapes(energy, images)
        energies, _ = jax.eval_shape(lambda v, x: energy.apply(v, x, train=train,
                                                               mutable=["batch_stats"]),
                                     e_vars, images)
        assert energies.shape == (BATCH,) and energies.dtype == jnp.float32


def test_bad_variant_and_size_are_one_line_errors():
    with pytest.raises(ValueError, match=r"SNGANEnergy\.variant='theirs' is not one of "
                                         r"\('ours', 'authors'\)"):
        networks.get_energy("sngan", variant="theirs")
    with pytest.raises(ValueError, match=r"DCGANGenerator\.image_size=16 .*variant='authors'"):
        networks.get_generator("dcgan", image_size=16, variant="authors")
    networks.get_generator("dcgan", image_size=16)  # 'ours' builds 16x16
    config = cifar10.get_config()
    config.model.energy_kwargs.variant = "paper"
    with pytest.raises(ConfigError, match=r"config\.model\.energy_kwargs.*variant='paper'"):
        validate(config, num_devices=1)


def test_paper_recipe_builds_the_authors_networks_with_synced_batch_norm():
    config = cifar10.get_config()
    info = data.get_info(config.data)
    generator, energy = models.build(config, info)
    assert generator.variant == energy.variant == "authors"
    assert generator.width is None  # the authors' own width: 128
    config.model.energy = "dcgan"  # the authors' dcgan energy has BatchNorm: synced
    assert models.build_energy(config, info).axis_name == models.AXIS_NAME


def test_every_batch_norm_of_the_dcgan_energy_gets_the_axis_name():
    energy = networks.get_energy("dcgan", width=WIDTH, variant="authors", axis_name="batch")
    x = jax.ShapeDtypeStruct((BATCH, 1, 32, 32, 3), jnp.float32)
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append(context.module.axis_name)
        return next_fun(*args, **kwargs)

    variables = _shapes(energy, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    with nn.intercept_methods(record):  # an axis name exists only inside a mapped function
        jax.eval_shape(jax.vmap(lambda v, x: energy.apply(v, x, train=True,
                                                          mutable=["batch_stats"]),
                                in_axes=(None, 0), axis_name="batch"), variables, x)
    assert seen == ["batch"] * 3


# ------------------------------------------------------------------------------------------------
# Numerics on tiny networks.
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def tiny(kind, name):
    """(module, variables, jitted init/infer/train, example input) at width 8, 32x32."""
    rng = np.random.default_rng(0 if kind == "generator" else 1)
    if kind == "generator":
        module = networks.get_generator(name, width=WIDTH, variant="authors")
        x = jnp.asarray(rng.standard_normal((BATCH, LATENT)), jnp.float32)
    else:
        module = networks.get_energy(name, width=WIDTH, variant="authors")
        x = jnp.asarray(rng.uniform(-1, 1, (BATCH, 32, 32, 3)), jnp.float32)
    fns = types.SimpleNamespace(
        infer=fast_jit(lambda v, x: module.apply(v, x, train=False)),
        train=fast_jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"])))
    variables = fast_jit(lambda key, x: module.init(key, x, train=False))(
        jax.random.PRNGKey(0), x)
    return module, variables, fns, x


@pytest.mark.parametrize("name", NETS)
def test_generator_range_and_modes(name):
    module, variables, fns, z = tiny("generator", name)
    # Weights x10 push pre-activations far beyond [-1, 1]: only the tanh bounds the outputs.
    big = dict(variables, params=jax.tree_util.tree_map(lambda p: 10 * p, variables["params"]))
    out = np.asarray(fns.infer(big, z))
    assert out.shape == (BATCH, 32, 32, 3) and out.dtype == np.float32
    assert np.all(np.abs(out) <= 1.0) and np.max(np.abs(out)) > 0.99
    # Inference mode writes nothing (flax refuses writes to an immutable collection) and is
    # deterministic; train mode updates every BatchNorm average.
    np.testing.assert_array_equal(np.asarray(fns.infer(variables, z)),
                                  np.asarray(fns.infer(variables, z)))
    with pytest.raises(flax.errors.ModifyScopeVariableError):
        jax.eval_shape(lambda: module.apply(variables, z, train=True))
    _, updates = fns.train(variables, z)
    for a, b in zip(jax.tree_util.tree_leaves(variables["batch_stats"]),
                    jax.tree_util.tree_leaves(updates["batch_stats"])):
        assert not np.allclose(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", NETS)
def test_energy_values_and_modes(name):
    module, variables, fns, x = tiny("energy", name)
    e = np.asarray(fns.infer(variables, x))
    assert e.shape == (BATCH,) and e.dtype == np.float32
    assert np.all(np.isfinite(e)) and np.ptp(e) > 0
    if name == "dcgan":  # the authors' sigmoid output
        assert np.all((e > 0) & (e < 1))
    # Inference mode: E(x_i) depends on x_i alone (BatchNorm reads its running averages).
    other = x.at[2:].set(-x[2:])
    np.testing.assert_allclose(np.asarray(fns.infer(variables, other))[:2], e[:2], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(fns.infer(variables, x)), e)
    # Train mode: the state (BatchNorm averages, power-iteration vectors) moves. Two calls:
    # the first sigma estimate equals its initial value (common.spectral_norm).
    updated = variables
    for _ in range(2):
        e_train, updates = fns.train(updated, x)
        updated = dict(updated, **updates)
    moved = [not np.allclose(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree_util.tree_leaves(variables["batch_stats"]),
                             jax.tree_util.tree_leaves(updated["batch_stats"]))]
    assert sum(moved) >= 3
    if name == "dcgan":
        # Train mode uses batch statistics, as the authors' discriminator.train(): the other
        # examples of the batch change the first two energies.
        e_other, _ = fns.train(variables, other)
        assert not np.allclose(np.asarray(e_other)[:2], np.asarray(fns.train(variables, x)[0])[:2])


def test_spectral_norm_power_iteration_converges_on_the_sngan_energy():
    _, variables, fns, x = tiny("energy", "sngan")
    # One power iteration per train call; the sigma estimate's relative error shrinks like
    # (s2/s1)^(2k): 60 calls bring it well within 5% for these random kernels.
    for _ in range(60):
        _, updates = fns.train(variables, x)
        variables = dict(variables, **updates)
    for i in range(7):
        kernel = np.asarray(variables["params"][f"conv{i}"]["kernel"])
        sigma = float(variables["batch_stats"][f"sn_conv{i}"][f"conv{i}/kernel/sigma"])
        top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]) / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) < 0.05, (i, top)


def test_weights_are_drawn_like_pytorchs():
    """Layers without spectral norm (flax stores those normalised): PyTorch's default
    U(+-1/sqrt(fan_in)) on the dcgan energy's convs, Xavier-uniform on the sngan dense layers.
    With >= 1000 draws from U(-b, b), the largest |w| exceeds 0.99 b with probability
    1 - 0.99^1000 > 0.9999."""
    def check(kernel, bound):
        kernel = np.abs(np.asarray(kernel))
        assert kernel.max() <= bound and kernel.max() > 0.99 * bound

    params = tiny("energy", "dcgan")[1]["params"]
    check(params["down1"]["kernel"], 1 / math.sqrt(16 * WIDTH))
    check(params["down2"]["kernel"], 1 / math.sqrt(16 * 2 * WIDTH))
    params = tiny("generator", "sngan")[1]["params"]
    fan_in, fan_out = LATENT, 4 * 4 * 8 * WIDTH
    check(params["dense"]["kernel"], math.sqrt(6 / (fan_in + fan_out)))
    check(params["dense"]["bias"], 1 / math.sqrt(fan_in))


def _ours(kind, name):
    """Our network of the same name and size as tiny(kind, name), jitted for inference."""
    build = networks.get_generator if kind == "generator" else networks.get_energy
    module = build(name, width=WIDTH)
    return fast_jit(lambda v, x: module.apply(v, x, train=False))


def test_the_resnet_energies_differ_only_by_the_final_mean():
    """Same layers, names and state as our ResNet energy: with our network's variables, the
    authors' energy is ours with the mean over the 8x8 map in place of the sum, so
    E_ours - b = 64 (E_authors - b), b the output bias."""
    _, variables, fns, x = tiny("energy", "resnet")
    assert (jax.tree_util.tree_structure(_shapes(networks.get_energy("resnet", width=WIDTH), x))
            == jax.tree_util.tree_structure(variables))
    e_authors = np.asarray(fns.infer(variables, x), np.float64)
    e_ours = np.asarray(_ours("energy", "resnet")(variables, x), np.float64)
    b = float(variables["params"]["out"]["bias"][0])
    np.testing.assert_allclose(e_ours - b, 64 * (e_authors - b), rtol=1e-4, atol=1e-5)


def test_the_sngan_generators_differ_only_by_the_biases_before_batch_norm():
    """With their biases set to zero, the authors' SNGAN generator computes ours (same layer
    names and shapes otherwise)."""
    _, variables, fns, z = tiny("generator", "sngan")
    before_bn = ("dense", "up0", "up1", "up2")  # the layers followed by BatchNorm
    ours_params = {layer: ({"kernel": leaves["kernel"]} if layer in before_bn else leaves)
                   for layer, leaves in variables["params"].items()}
    params = {layer: (dict(leaves, bias=jnp.zeros_like(leaves["bias"])) if layer in before_bn
                      else leaves) for layer, leaves in variables["params"].items()}
    ours_vars = dict(variables, params=ours_params)
    zeroed = dict(variables, params=params)
    assert (jax.tree_util.tree_structure(_shapes(networks.get_generator("sngan", width=WIDTH), z))
            == jax.tree_util.tree_structure(ours_vars))
    np.testing.assert_allclose(np.asarray(fns.infer(zeroed, z)),
                               np.asarray(_ours("generator", "sngan")(ours_vars, z)),
                               rtol=1e-4, atol=1e-5)
