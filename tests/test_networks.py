"""Tests of kale_jax.networks: shapes, ranges, state handling, spectral norm, BatchNorm sync.

Networks are tiny (width 8) so the file runs in well under a minute on 2 CPU cores; the default
(paper) sizes are only checked through jax.eval_shape, which computes nothing.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from kale_jax import networks

IMAGE_NETS = ("dcgan", "sngan", "resnet")
IMAGE_CASES = [(name, size) for name in IMAGE_NETS for size in (32, 64)]
LATENT_DIM = 8
MLP_DIM = 3


def _channels(size):
    # Two channel counts across the cases: 3 (RGB) at 32, an unusual 2 at 64.
    return 3 if size == 32 else 2


def tiny_generator(name, size=32, **kwargs):
    if name == "mlp":
        return networks.get_generator("mlp", output_dim=MLP_DIM, hidden=16, depth=2,
                                      batch_norm=True, **kwargs)
    return networks.get_generator(name, image_size=size, channels=_channels(size), width=8,
                                  **kwargs)


def tiny_energy(name, size=32):
    if name == "mlp":
        return networks.get_energy("mlp", hidden=16, depth=2, spectral_norm=True)
    return networks.get_energy(name, image_size=size, channels=_channels(size), width=8)


def sample_shape(name, size):
    return (MLP_DIM,) if name == "mlp" else (size, size, _channels(size))


def latents(n, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, LATENT_DIM))


def inputs(name, size, n, seed=1):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, *sample_shape(name, size)),
                              minval=-1.0, maxval=1.0)


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name,size", IMAGE_CASES + [("mlp", None)])
def test_generator_output_shape_and_tanh_range(name, size):
    gen = tiny_generator(name, size, **({"output_activation": "tanh"} if name == "mlp" else {}))
    variables = networks.init_variables(gen, jax.random.PRNGKey(0), latents(1))
    # Weights x10 push pre-activations far beyond [-1, 1]: only the final tanh keeps the
    # outputs bounded, and the saturation check shows the bound was actually tested.
    big = dict(variables, params=jax.tree_util.tree_map(lambda p: 10.0 * p, variables["params"]))
    out = np.asarray(jax.jit(lambda v, z: gen.apply(v, z, train=False))(big, latents(6)))
    assert out.shape == (6, *sample_shape(name, size))
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= 1.0)
    assert np.max(np.abs(out)) > 0.99


def test_mlp_generator_default_output_is_unbounded():
    gen = networks.get_generator("mlp", output_dim=MLP_DIM, hidden=16)
    variables = networks.init_variables(gen, jax.random.PRNGKey(0), latents(1))
    big = {"params": jax.tree_util.tree_map(lambda p: 10.0 * p, variables["params"])}
    out = gen.apply(big, latents(6), train=False)
    assert out.shape == (6, MLP_DIM)
    assert np.max(np.abs(out)) > 1.0


@pytest.mark.parametrize("name,size", IMAGE_CASES + [("mlp", None)])
def test_energy_shape_and_per_example_independence(name, size):
    energy = tiny_energy(name, size)
    x = inputs(name, size, 5)
    variables = networks.init_variables(energy, jax.random.PRNGKey(0), x[:1])
    apply = jax.jit(lambda v, x: energy.apply(v, x, train=False))
    e = np.asarray(apply(variables, x))
    assert e.shape == (5,)
    assert e.dtype == np.float32
    assert np.all(np.isfinite(e))
    assert np.ptp(e) > 0  # depends on its input
    # No batch coupling (no BatchNorm in energies): a sub-batch gets the same energies.
    np.testing.assert_allclose(np.asarray(apply(variables, x[:2])), e[:2], rtol=1e-5, atol=1e-6)


def _spectral_pairs(params, stats):
    """(path, kernel, stored sigma) for every kernel; fails if a kernel has no spectral norm.

    Our modules wrap layer `L` as SpectralNorm named 'sn_L', which stores 'L/kernel/sigma'."""
    pairs = []
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, kernel in flat:
        keys = [k.key for k in path]
        if keys[-1] != "kernel":
            continue
        *prefix, layer, _ = keys
        node = stats
        for k in prefix:
            node = node[k]
        sn = node.get(f"sn_{layer}", {})
        assert f"{layer}/kernel/sigma" in sn, f"{'/'.join(keys)} is not spectrally normalised"
        pairs.append(("/".join(keys), np.asarray(kernel), float(sn[f"{layer}/kernel/sigma"])))
    return pairs


@pytest.mark.parametrize("name,size", [("sngan", 32), ("sngan", 64), ("resnet", 32),
                                       ("resnet", 64), ("mlp", None)])
def test_spectral_norm_power_iteration_normalises_every_weight(name, size):
    energy = tiny_energy(name, size)
    x = inputs(name, size, 2)
    variables = networks.init_variables(energy, jax.random.PRNGKey(0), x)

    @jax.jit
    def train_call(variables):
        _, updates = energy.apply(variables, x, train=True, mutable=["batch_stats"])
        return dict(variables, **updates)

    # One power iteration per train-mode call; the sigma estimate's relative error shrinks like
    # (s2/s1)^(2k), so 60 calls bring it within 5% for the random kernels here.
    for _ in range(60):
        variables = train_call(variables)
    pairs = _spectral_pairs(variables["params"], variables["batch_stats"])
    assert len(pairs) >= 3
    for path, kernel, sigma in pairs:
        # flax flattens a kernel (..., in, out) to a (prod(...) * in, out) matrix.
        matrix = kernel.reshape(-1, kernel.shape[-1])
        top = np.linalg.svd(matrix / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) < 0.05, f"{path}: top singular value {top}"


def _tiny(kind, name):
    module = tiny_generator(name) if kind == "generator" else tiny_energy(name, 32)
    x = latents(4) if kind == "generator" else inputs(name, 32, 4)
    return module, x


@pytest.mark.parametrize("kind", ["generator", "energy"])
@pytest.mark.parametrize("name", ["dcgan", "sngan", "resnet", "mlp"])
def test_inference_mode_updates_nothing_and_is_deterministic(kind, name):
    module, x = _tiny(kind, name)
    variables = networks.init_variables(module, jax.random.PRNGKey(0), x[:1])
    out, updates = module.apply(variables, x, train=False, mutable=["batch_stats"])
    assert_trees_equal(updates.get("batch_stats", {}), variables.get("batch_stats", {}))
    # Without a mutable collection (as in MCMC) the call works and gives the same output.
    np.testing.assert_array_equal(np.asarray(module.apply(variables, x, train=False)),
                                  np.asarray(out))


@pytest.mark.parametrize("kind,name", [("generator", n) for n in ("dcgan", "sngan", "resnet", "mlp")]
                         + [("energy", n) for n in ("sngan", "resnet", "mlp")])
def test_train_mode_updates_every_state_variable(kind, name):
    module, x = _tiny(kind, name)
    variables = networks.init_variables(module, jax.random.PRNGKey(0), x[:1])
    _, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    old = jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
    new = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert len(old) == len(new) > 0
    for (path, a), b in zip(old, new):
        assert not np.allclose(np.asarray(a), np.asarray(b)), f"{jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("name", ["dcgan", "resnet", "mlp"])
def test_batch_norm_synchronised_across_devices_in_shard_map(name):
    devices = jax.devices()[:4]
    assert len(devices) == 4
    synced = tiny_generator(name, axis_name="batch")
    local = tiny_generator(name)
    # Per-shard latents with different scales, so per-shard statistics differ clearly.
    z = latents(8) * jnp.repeat(jnp.array([0.5, 1.0, 2.0, 4.0]), 2)[:, None]
    variables = networks.init_variables(local, jax.random.PRNGKey(0), z[:1])

    def train_call(module, variables, z):
        out, updates = module.apply(variables, z, train=True, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    full_out, full_stats = jax.jit(functools.partial(train_call, local))(variables, z)
    mesh = Mesh(np.array(devices), ("batch",))
    sharded = jax.jit(jax.shard_map(functools.partial(train_call, synced), mesh=mesh,
                                    in_specs=(P(), P("batch")), out_specs=(P("batch"), P())))
    out, stats = sharded(variables, z)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(full_stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full_out), rtol=1e-4, atol=1e-5)

    # Control: one shard's own statistics differ from the full batch's, so the check above
    # could only pass because the statistics were averaged across devices.
    _, shard_stats = jax.jit(functools.partial(train_call, local))(variables, z[:2])
    assert not all(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
                   for a, b in zip(jax.tree_util.tree_leaves(shard_stats),
                                   jax.tree_util.tree_leaves(full_stats)))


def test_batch_norm_synchronised_across_devices_in_pmap():
    synced = tiny_generator("mlp", axis_name="batch")
    local = tiny_generator("mlp")
    z = latents(8) * jnp.repeat(jnp.array([0.5, 1.0, 2.0, 4.0]), 2)[:, None]
    variables = networks.init_variables(local, jax.random.PRNGKey(0), z[:1])
    _, full = local.apply(variables, z, train=True, mutable=["batch_stats"])
    replicated = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 4), variables)
    _, per_device = jax.pmap(
        lambda v, z: synced.apply(v, z, train=True, mutable=["batch_stats"]),
        axis_name="batch", devices=jax.devices()[:4])(replicated, z.reshape(4, 2, LATENT_DIM))
    for a, b in zip(jax.tree_util.tree_leaves(per_device), jax.tree_util.tree_leaves(full)):
        for device in range(4):
            np.testing.assert_allclose(np.asarray(a[device]), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_default_widths_match_the_papers():
    """Kernel shapes of the default networks (jax.eval_shape: nothing is computed)."""
    def shapes(module, example):
        tree = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), example, train=False))
        return jax.tree_util.tree_map(lambda s: s.shape, tree["params"])

    z = jnp.zeros((1, 100))
    x32, x64 = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 64, 64, 3))
    # SNGAN standard CNN (Miyato et al. 2018, Table 3): 4x4x512 -> 256 -> 128 -> 64 -> 3.
    g = shapes(networks.get_generator("sngan"), z)
    assert g["dense"]["kernel"] == (100, 4 * 4 * 512)
    assert [g[f"up{i}"]["kernel"][-1] for i in range(3)] == [256, 128, 64]
    assert g["out"]["kernel"] == (3, 3, 64, 3)
    e = shapes(networks.get_energy("sngan"), x32)
    assert [e[f"conv{i}"]["kernel"][-1] for i in range(3)] == [64, 128, 256]
    assert e["conv_top"]["kernel"] == (3, 3, 256, 512)
    assert e["out"]["kernel"] == (4 * 4 * 512, 1)
    # SN-ResNet (Table 4): generator blocks of 256 channels, energy blocks of 128.
    g = shapes(networks.get_generator("resnet"), z)
    assert g["dense"]["kernel"] == (100, 4 * 4 * 256)
    assert all(g[f"block{i}"]["conv2"]["kernel"] == (3, 3, 256, 256) for i in range(3))
    e = shapes(networks.get_energy("resnet"), x32)
    assert all(e[f"block{i}"]["conv2"]["kernel"] == (3, 3, 128, 128) for i in range(4))
    assert e["out"]["kernel"] == (128, 1)
    # DCGAN at 64 (Radford et al. 2016): 4x4x512 -> 256 -> 128 -> 64 -> 3; the energy mirrors it.
    g = shapes(networks.get_generator("dcgan", image_size=64), z)
    assert g["dense"]["kernel"] == (100, 4 * 4 * 512)
    assert [g[f"up{i}"]["kernel"][-1] for i in range(4)] == [256, 128, 64, 3]
    e = shapes(networks.get_energy("dcgan", image_size=64), x64)
    assert [e[f"down{i}"]["kernel"][-1] for i in range(4)] == [64, 128, 256, 512]


def test_registry_names_and_errors():
    assert set(networks.GENERATOR_NAMES) == set(networks.ENERGY_NAMES) == {
        "dcgan", "sngan", "resnet", "mlp"}
    with pytest.raises(ValueError, match="unknown generator name 'gan'.*'dcgan'"):
        networks.get_generator("gan")
    with pytest.raises(ValueError, match="unknown energy name 'gan'.*'resnet'"):
        networks.get_energy("gan")
    with pytest.raises(ValueError, match="unknown keyword arguments \\['widht'\\]"):
        networks.get_energy("sngan", widht=8)
    with pytest.raises(ValueError, match="unknown network name"):
        networks.supported_image_sizes("gan")
    assert networks.supported_image_sizes("mlp") == ()
    for name in IMAGE_NETS:
        assert networks.supported_image_sizes(name) == (32, 64)
        for build in (networks.get_generator, networks.get_energy):
            with pytest.raises(ValueError, match=r"image_size=48 .*\(32, 64\)"):
                build(name, image_size=48)
        with pytest.raises(ValueError, match="width=0"):
            networks.get_generator(name, width=0)
    with pytest.raises(ValueError, match="activation='gelu'"):
        networks.get_energy("mlp", activation="gelu")
    with pytest.raises(ValueError, match="depth=-1"):
        networks.get_generator("mlp", depth=-1)


def test_energy_rejects_inputs_of_the_wrong_shape():
    energy = networks.get_energy("dcgan", image_size=32, channels=3, width=8)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        energy.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
    gen = networks.get_generator("dcgan", width=8)
    with pytest.raises(ValueError, match="latent_dim"):
        gen.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4)), train=False)
