"""Tests of kale_jax.networks: shapes, ranges, state handling, spectral norm, BatchNorm sync.

Networks are tiny (width 8) and every network is initialised and compiled once per session
(XLA:CPU compilation, not computation, dominates the time here); the default (paper) sizes are
only checked through jax.eval_shape, which computes nothing.
"""
import functools
import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from experiments import param_counts
from kale_jax import networks
from kale_jax.networks import common

IMAGE_NETS = ("dcgan", "sngan", "resnet")
ALL_NETS = IMAGE_NETS + ("mlp",)
IMAGE_CASES = [(name, size) for name in IMAGE_NETS for size in (32, 64)] + [("dcgan", 16)]
BATCH = 4
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


# Test inputs come from numpy: a jax.random draw would be one more XLA compilation per shape.
def latents(n=BATCH, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, LATENT_DIM)), jnp.float32)


def samples(name, size, n=BATCH, seed=1):
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *sample_shape(name, size)))
    return jnp.asarray(x, jnp.float32)


# The tiny networks compute next to nothing; compiling them is what costs time, and LLVM's
# optimisation level 0 halves it (measured: 12 s -> 5 s CPU for the SNGAN energy's init).
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def compiled(module):
    """The ways a network is called, each jitted once (inputs of batch BATCH)."""
    return types.SimpleNamespace(
        init=fast_jit(lambda key, x: module.init(key, x, train=False)),
        infer=fast_jit(lambda v, x: module.apply(v, x, train=False)),
        train=fast_jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"])),
    )


@functools.lru_cache(maxsize=None)
def tiny(kind, name, size=32):
    """(module, variables, compiled functions, example input) of a tiny network."""
    if kind == "generator":
        module, x = tiny_generator(name, size), latents()
    else:
        module, x = tiny_energy(name, size), samples(name, size)
    fns = compiled(module)
    return module, fns.init(jax.random.PRNGKey(0), x), fns, x


def scaled(variables, factor):
    return dict(variables, params=jax.tree_util.tree_map(lambda p: factor * p,
                                                         variables["params"]))


@pytest.mark.parametrize("name,size", IMAGE_CASES)
def test_image_network_shapes(name, size):
    """Shapes and dtypes by abstract evaluation (nothing is compiled): both sizes, two channel
    counts. The numerical properties are tested at size 32 below."""
    generator, energy = tiny_generator(name, size), tiny_energy(name, size)
    z, x = latents(), samples(name, size)
    g_vars = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), z, train=False))
    e_vars = jax.eval_shape(lambda: energy.init(jax.random.PRNGKey(0), x, train=False))
    for train in (False, True):
        images, _ = jax.eval_shape(lambda v: generator.apply(v, z, train=train,
                                                             mutable=["batch_stats"]), g_vars)
        assert images.shape == (BATCH, size, size, _channels(size))
        assert images.dtype == jnp.float32
        energies, _ = jax.eval_shape(lambda v, x: energy.apply(v, x, train=train,
                                                               mutable=["batch_stats"]),
                                     e_vars, images)
        assert energies.shape == (BATCH,) and energies.dtype == jnp.float32
    for leaf in jax.tree_util.tree_leaves((g_vars, e_vars)):
        assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("name", IMAGE_NETS)
def test_image_generator_output_tanh_range(name):
    _, variables, fns, z = tiny("generator", name)
    # Weights x10 push pre-activations far beyond [-1, 1]: only the final tanh keeps the
    # outputs bounded, and the saturation check shows the bound was actually tested.
    out = np.asarray(fns.infer(scaled(variables, 10.0), z))
    assert out.shape == (BATCH, 32, 32, 3)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= 1.0)
    assert np.max(np.abs(out)) > 0.99


def test_mlp_generator_output_is_unbounded_unless_asked():
    _, variables, fns, z = tiny("generator", "mlp")
    big = scaled(variables, 10.0)
    out = np.asarray(fns.infer(big, z))
    assert out.shape == (BATCH, MLP_DIM) and out.dtype == np.float32
    assert np.max(np.abs(out)) > 1.0
    # The tanh output layer adds no parameter, so the same variables fit.
    bounded = fast_jit(lambda v, z: tiny_generator("mlp", output_activation="tanh").apply(
        v, z, train=False))(big, z)
    assert np.all(np.abs(bounded) <= 1.0)
    np.testing.assert_allclose(bounded, np.tanh(out), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_NETS)
def test_energy_values_and_per_example_independence(name):
    size = 32
    _, variables, fns, x = tiny("energy", name, size)
    e = np.asarray(fns.infer(variables, x))
    assert e.shape == (BATCH,)
    assert e.dtype == np.float32
    assert np.all(np.isfinite(e))
    assert np.ptp(e) > 0  # depends on its input
    # No batch coupling (no BatchNorm in energies): replacing the other examples of the batch
    # leaves the energies of the first two unchanged.
    other = x.at[2:].set(samples(name, size, BATCH - 2, seed=7))
    np.testing.assert_allclose(np.asarray(fns.infer(variables, other))[:2], e[:2], rtol=1e-5,
                               atol=1e-6)


def _spectral_pairs(params, stats):
    """(path, kernel, stored sigma) for every kernel; fails if a kernel has no spectral norm.

    Our modules wrap layer `L` as SpectralNorm named 'sn_L', which stores 'L/kernel/sigma'."""
    pairs = []
    for path, kernel in jax.tree_util.tree_flatten_with_path(params)[0]:
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


@pytest.mark.parametrize("name", ["sngan", "resnet", "mlp"])
def test_spectral_norm_power_iteration_normalises_every_weight(name):
    _, variables, fns, x = tiny("energy", name)
    # One power iteration per train-mode call; the sigma estimate's relative error shrinks like
    # (s2/s1)^(2k), so 60 calls bring it well within 5% for the random kernels here.
    for _ in range(60):
        _, updates = fns.train(variables, x)
        variables = dict(variables, **updates)
    pairs = _spectral_pairs(variables["params"], variables["batch_stats"])
    assert len(pairs) >= 3
    for path, kernel, sigma in pairs:
        # flax flattens a kernel (..., in, out) to a (prod(...) * in, out) matrix.
        matrix = kernel.reshape(-1, kernel.shape[-1])
        top = np.linalg.svd(matrix / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) < 0.05, f"{path}: top singular value {top}"


@pytest.mark.parametrize("kind", ["generator", "energy"])
@pytest.mark.parametrize("name", ALL_NETS)
def test_inference_mode_updates_nothing_and_is_deterministic(kind, name):
    module, variables, fns, x = tiny(kind, name)
    # flax raises ModifyScopeVariableError on any write to a collection that is not mutable,
    # so a call without `mutable` that succeeds has updated nothing.
    out = np.asarray(fns.infer(variables, x))
    np.testing.assert_array_equal(np.asarray(fns.infer(variables, x)), out)
    if "batch_stats" in variables:
        # Control: the same call in train mode does write, and is refused.
        with pytest.raises(flax.errors.ModifyScopeVariableError):
            jax.eval_shape(lambda: module.apply(variables, x, train=True))


def _is_single_column_spectral_state(path, stats):
    """True for the u/sigma of a kernel with one output column (e.g. the last dense layer):
    flax stores that kernel normalised at init, a unit vector, which power iteration leaves
    exactly as it is, so its state cannot change."""
    keys = [k.key for k in path]
    if not keys[-1].endswith(("/u", "/sigma")):
        return False
    node = stats
    for k in keys[:-1]:
        node = node[k]
    return node[keys[-1].rsplit("/", 1)[0] + "/u"].shape[-1] == 1


@pytest.mark.parametrize("kind,name", [("generator", n) for n in ALL_NETS]
                         + [("energy", n) for n in ("sngan", "resnet", "mlp")])
def test_train_mode_updates_every_state_variable(kind, name):
    _, variables, fns, x = tiny(kind, name)
    # Two calls: flax's SpectralNorm stores the kernel normalised with the initial u, so the
    # first call's sigma estimate equals its initial value 1 (see common.spectral_norm).
    updated = variables
    for _ in range(2):
        _, updates = fns.train(updated, x)
        updated = dict(updated, **updates)
    stats = variables["batch_stats"]
    old = jax.tree_util.tree_leaves_with_path(stats)
    new = jax.tree_util.tree_leaves(updated["batch_stats"])
    assert len(old) == len(new) > 0
    checked = 0
    for (path, a), b in zip(old, new):
        if _is_single_column_spectral_state(path, stats):
            continue
        assert not np.allclose(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)
        checked += 1
    assert checked >= 2


def _batch_with_different_shards():
    # Per-device latents with different scales, so per-device statistics differ clearly.
    return latents() * jnp.array([0.5, 1.0, 2.0, 4.0])[:, None]


@pytest.mark.parametrize("name,size", [(n, 32) for n in ALL_NETS] + [(n, 64) for n in IMAGE_NETS])
def test_every_batch_norm_gets_the_axis_name(name, size):
    module = tiny_generator(name, size, axis_name="batch")
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append(context.module.axis_name)
        return next_fun(*args, **kwargs)

    z = latents()
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), z, train=False))
    with nn.intercept_methods(record):
        # An axis name only exists inside a mapped function: vmap provides one.
        jax.eval_shape(jax.vmap(lambda v, z: module.apply(v, z, train=True,
                                                          mutable=["batch_stats"]),
                                in_axes=(None, 0), axis_name="batch"), variables, z[:, None])
    n_batch_norms = len(variables["batch_stats"])
    if name == "resnet":  # two per residual block
        n_batch_norms += len([k for k in variables["batch_stats"] if k.startswith("block")])
    assert len(seen) == n_batch_norms > 0
    assert set(seen) == {"batch"}


def test_batch_norm_synchronised_across_devices_in_shard_map():
    name = "dcgan"  # the wiring of every generator is checked above; the numerics once here
    devices = jax.devices()[:4]
    assert len(devices) == 4 == BATCH  # one example per device
    _, variables, fns, _ = tiny("generator", name)
    synced = tiny_generator(name, axis_name="batch")
    z = _batch_with_different_shards()
    full_out, full_stats = fns.train(variables, z)

    def train_call(variables, z):
        out, updates = synced.apply(variables, z, train=True, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    mesh = Mesh(np.array(devices), ("batch",))
    sharded = fast_jit(jax.shard_map(train_call, mesh=mesh, in_specs=(P(), P("batch")),
                                    out_specs=(P("batch"), P())))
    out, stats = sharded(variables, z)
    for a, b in zip(jax.tree_util.tree_leaves(stats),
                    jax.tree_util.tree_leaves(full_stats["batch_stats"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full_out), rtol=1e-4, atol=1e-5)

    # Control: device 0's own statistics (its example repeated has the same mean and
    # variance) differ from the full batch's, so the check above could only pass because the
    # statistics were averaged across devices.
    _, shard_stats = fns.train(variables, jnp.repeat(z[:1], BATCH, axis=0))
    assert not all(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
                   for a, b in zip(jax.tree_util.tree_leaves(shard_stats),
                                   jax.tree_util.tree_leaves(full_stats)))


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


def test_dcgan_at_16_has_two_stages_and_the_32_64_counts_are_unchanged():
    """16x16 DCGAN: 4x4x2w -> 8x8xw -> 16x16xC and back (kernel shapes, hand parameter counts);
    the default 32 / 64 pairs keep the README's counts."""
    w, d, c = 8, 5, 1
    z, x = jnp.zeros((1, d)), jnp.zeros((1, 16, 16, c))
    generator = networks.get_generator("dcgan", image_size=16, channels=c, width=w)
    energy = networks.get_energy("dcgan", image_size=16, channels=c, width=w)
    g = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), z, train=False))["params"]
    e = jax.eval_shape(lambda: energy.init(jax.random.PRNGKey(0), x, train=False))["params"]
    assert g["dense"]["kernel"].shape == (d, 4 * 4 * 2 * w)
    assert [g[f"up{i}"]["kernel"].shape for i in range(2)] == [(4, 4, 2 * w, w), (4, 4, w, c)]
    assert "up2" not in g
    assert [e[f"down{i}"]["kernel"].shape for i in range(2)] == [(4, 4, c, w), (4, 4, w, 2 * w)]
    assert e["out"]["kernel"].shape == (4 * 4 * 2 * w, 1)
    assert networks.count_parameters(g) == (d * 16 * 2 * w + 2 * 2 * w  # dense, BatchNorm
                                            + 16 * 2 * w * w + 2 * w  # up0 (no bias), BatchNorm
                                            + 16 * w * c + c)  # up1 with bias
    assert networks.count_parameters(e) == (16 * c * w + w + 16 * w * 2 * w + 2 * w
                                            + 16 * 2 * w + 1)
    # README "Networks" table (latent 100, 3 channels, default width 64).
    rows = param_counts.parameter_rows(("dcgan",), (32, 64))
    assert [(r.generator_params, r.energy_params) for r in rows] == [
        (1_068_931, 662_977), (3_576_707, 2_764_737)]


def test_registry_names_and_errors():
    assert set(networks.ENERGY_NAMES) == set(ALL_NETS)
    assert set(networks.GENERATOR_NAMES) == set(ALL_NETS) | set(networks.FLOW_NAMES)
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
        sizes = (16, 32, 64) if name == "dcgan" else (32, 64)
        assert networks.supported_image_sizes(name) == sizes
        for build in (networks.get_generator, networks.get_energy):
            allowed = ", ".join(map(str, sizes))
            with pytest.raises(ValueError, match=rf"image_size=48 .*\({allowed}\)"):
                build(name, image_size=48)
            if name != "dcgan":  # 16x16 is the DCGAN pair's alone
                with pytest.raises(ValueError, match=r"image_size=16 .*\(32, 64\)"):
                    build(name, image_size=16)
        with pytest.raises(ValueError, match="width=0"):
            networks.get_generator(name, width=0)
    with pytest.raises(ValueError, match="activation='gelu'"):
        networks.get_energy("mlp", activation="gelu")
    with pytest.raises(ValueError, match="depth=-1"):
        networks.get_generator("mlp", depth=-1)


def test_networks_reject_inputs_of_the_wrong_shape():
    energy = networks.get_energy("dcgan", image_size=32, channels=3, width=8)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        jax.eval_shape(lambda: energy.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                           train=False))
    gen = networks.get_generator("dcgan", width=8)
    with pytest.raises(ValueError, match="latent_dim"):
        jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4)),
                                        train=False))


@pytest.mark.parametrize("mode,fan", [("fan_in", 16 * 9), ("fan_out", 32 * 9),
                                      ("fan_avg", (16 + 32) * 9 / 2)])
def test_uniform_variance_scaling_matches_closed_form(mode, fan):
    shape = (3, 3, 16, 32)
    w = np.asarray(common.uniform_variance_scaling(2.0, mode)(jax.random.PRNGKey(0), shape))
    limit = np.sqrt(3 * 2.0 / fan)
    assert w.shape == shape and w.dtype == np.float32
    assert np.all(np.abs(w) <= limit) and np.max(np.abs(w)) > 0.99 * limit
    # U(-l, l) has variance l^2 / 3 and fourth moment l^4 / 5, so the sample variance of n
    # draws has relative standard deviation 3 sqrt((1/5 - 1/9) / n) = 1.3% at n = 4608;
    # 5 standard deviations give 6.6%.
    np.testing.assert_allclose(np.var(w), 2.0 / fan, rtol=0.066)


def test_normal_init_matches_closed_form():
    w = np.asarray(common.normal_init(0.02)(jax.random.PRNGKey(0), (4, 4, 16, 32)))
    assert w.shape == (4, 4, 16, 32) and w.dtype == np.float32
    # The sample std of n = 8192 normals has relative standard deviation 1 / sqrt(2 n) = 0.78%;
    # 5 standard deviations give 3.9%. The sample mean has standard deviation 0.02 / sqrt(n).
    np.testing.assert_allclose(np.std(w), 0.02, rtol=0.039)
    assert abs(np.mean(w)) < 5 * 0.02 / np.sqrt(w.size)
