"""Tests of kale_jax.networks.precision and config.model.dtype (mixed precision).

bfloat16 networks must leave the variable tree float32 and unchanged, run their matmuls and convs
in bfloat16, keep every energy, loss, exp / log and MCMC quantity float32, agree with float32
within a bound derived from bfloat16's rounding, train with finite metrics, and resume float32
checkpoints. Networks are tiny; the conv networks are only traced (make_jaxpr), never compiled.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from kale_jax import data, hmc, kale, latent, networks
from kale_jax.errors import ConfigError
from kale_jax.mcmc import mala, noise
from kale_jax.networks import precision
from kale_jax.train import Trainer, outputs, steps, train_and_evaluate
from kale_jax.train import validate as validate_lib

from helpers import max_abs_difference

BF16 = jnp.dtype(jnp.bfloat16)
F32 = jnp.dtype(jnp.float32)
# bfloat16 keeps 8 significant bits: round-to-nearest has unit roundoff u = 2^-8 (relative error
# of one rounding at most u).
UNIT_ROUNDOFF = 2.0 ** -8
TRANSCENDENTALS = ("exp", "exp2", "log", "log1p", "expm1", "logistic", "pow")


def _config(dataset="ring", dtype="float32", num_steps=6):
    config = test_config.get_config(dataset)
    config.model.dtype = dtype
    config.train.num_steps = num_steps
    config.train.tensorboard = False
    return config


# ------------------------------------------------------------------------------ jaxpr helpers
def _equations(jaxpr):
    """Every equation of a jaxpr and of those nested in it (jit, custom_vjp, scan, cond, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from _equations(sub.jaxpr)


def _ops(closed, names):
    """(primitive name, operand avals) of the equations of `closed` whose primitive is in names."""
    return [(e.primitive.name, [v.aval for v in e.invars])
            for e in _equations(closed.jaxpr) if e.primitive.name in names]


def _assert_no_bfloat16_transcendental(closed):
    ops = _ops(closed, TRANSCENDENTALS)
    bad = [(name, [str(a) for a in avals]) for name, avals in ops
           if any(getattr(a, "dtype", None) == BF16 for a in avals)]
    assert not bad, bad
    return ops


# ------------------------------------------------------------------------- the wrapper itself
NETWORKS = [  # (role, name, kwargs, input shape without the batch axis)
    ("energy", "mlp", dict(hidden=8, depth=2, spectral_norm=True), (5,)),
    ("generator", "mlp", dict(output_dim=5, hidden=8, depth=2, batch_norm=True), (3,)),
    ("energy", "dcgan", dict(image_size=16, channels=3, width=8), (16, 16, 3)),
    ("generator", "dcgan", dict(image_size=16, channels=3, width=8), (6,)),
    ("energy", "sngan", dict(image_size=32, channels=3, width=8), (32, 32, 3)),
    ("generator", "sngan", dict(image_size=32, channels=3, width=8), (6,)),
    ("energy", "resnet", dict(image_size=32, channels=3, width=8), (32, 32, 3)),
    ("generator", "resnet", dict(image_size=32, channels=3, width=8), (6,)),
    # The authors' networks (networks/authors.py; the dcgan energy has BatchNorm), wrapped as is.
    ("energy", "dcgan", dict(image_size=32, channels=3, width=8, variant="authors"),
     (32, 32, 3)),
    ("generator", "sngan", dict(image_size=32, channels=3, width=8, variant="authors"), (6,)),
    ("energy", "resnet", dict(image_size=32, channels=3, width=8, variant="authors"),
     (32, 32, 3)),
]


def _module(role, name, kwargs):
    return (networks.get_energy if role == "energy" else networks.get_generator)(name, **kwargs)


def _abstract_variables(module, shape):
    return jax.eval_shape(lambda k: module.init(k, jnp.zeros((1,) + shape), train=False),
                          jax.random.key(0))


@pytest.mark.parametrize("role,name,kwargs,shape", NETWORKS,
                         ids=[f"{r}-{n}-{k.get('variant', 'ours')}" for r, n, k, _ in NETWORKS])
def test_bfloat16_networks_keep_the_tree_and_run_matmuls_and_convs_in_bfloat16(
        role, name, kwargs, shape):
    """Same variables (names, shapes, float32) as unwrapped; in train mode (with state updates),
    in inference mode and in the input- and parameter-gradients, every conv and matmul has
    bfloat16 operands, except the spectral-norm power iteration (a float32 row vector u or v of
    shape (1, k) times the kernel, kept in float32 on purpose); outputs and the updated
    'batch_stats' are float32."""
    module = _module(role, name, kwargs)
    wrapped = precision.with_dtype(module, "bfloat16")
    variables = _abstract_variables(module, shape)
    assert _abstract_variables(wrapped, shape) == variables
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {F32}
    x = jax.ShapeDtypeStruct((2,) + shape, F32)

    def train(v, x):
        return wrapped.apply(v, x, train=True, mutable=["batch_stats"])

    def gradients(v, x):
        return jax.grad(lambda v, x: jnp.sum(wrapped.apply(v, x, train=False)), (0, 1))(v, x)

    for fn in (train, lambda v, x: wrapped.apply(v, x, train=False), gradients):
        closed = jax.make_jaxpr(fn)(variables, x)
        ops = _ops(closed, ("dot_general", "conv_general_dilated"))
        in_bf16 = [avals for _, avals in ops if all(a.dtype == BF16 for a in avals)]
        others = [avals for _, avals in ops if not all(a.dtype == BF16 for a in avals)]
        assert in_bf16
        for avals in others:  # the power iteration of nn.SpectralNorm
            assert avals[0].dtype == F32 and avals[0].shape[0] == 1, avals
        assert {a.dtype for a in jax.tree_util.tree_leaves(closed.out_avals)} <= {F32}, fn
    out, updates = jax.eval_shape(train, variables, x)
    assert out.dtype == F32
    if "batch_stats" in variables:
        assert updates["batch_stats"] == variables["batch_stats"]  # same tree, shapes, float32


def test_wrapped_initialisation_and_float32_are_the_unwrapped_module():
    """Initial values are bit-identical (not rounded through bfloat16), and 'float32' wraps
    nothing."""
    module = networks.get_energy("mlp", hidden=8, depth=2, spectral_norm=True)
    x = jnp.linspace(-1.0, 1.0, 10).reshape(2, 5)
    plain = networks.init_variables(module, jax.random.key(3), x)
    wrapped = networks.init_variables(precision.with_dtype(module, "bfloat16"),
                                      jax.random.key(3), x)
    assert max_abs_difference(plain, wrapped) == 0.0
    assert precision.with_dtype(module, "float32") is module
    with pytest.raises(ValueError, match="allowed"):
        precision.with_dtype(module, "float16")


def test_bad_dtype_is_a_one_line_config_error():
    config = _config(dtype="float16")
    with pytest.raises(ConfigError) as error:
        validate_lib.validate(config)
    message = str(error.value)
    assert "\n" not in message
    assert "config.model.dtype='float16'" in message and "'bfloat16'" in message
    flow = test_config.get_config("sphere3d")
    flow.model.generator, flow.model.latent_dim, flow.model.dtype = "realnvp", None, "bfloat16"
    flow.model.generator_kwargs = dict(num_layers=2, hidden=8)
    with pytest.raises(ConfigError, match=r"config.model.dtype='bfloat16' is not supported for "
                                          r"the flow generator 'realnvp'.*'float32'"):
        validate_lib.validate(flow)
    ebm = test_config.get_config("ebm")
    ebm.model.dtype = "bfloat16"
    validate_lib.validate(ebm)  # the energy-only EBM has an mlp energy: allowed
    ebm.model.dtype = "half"
    with pytest.raises(ConfigError, match="config.model.dtype='half'"):
        validate_lib.validate(ebm)


def test_checkpoints_do_not_fix_the_compute_dtype():
    """Resuming and sampling compare config.model leaf by leaf, except its dtype."""
    saved = {"config": _config(dtype="float32").to_dict()}
    for keys in (validate_lib.RESUME_KEYS, validate_lib.SAMPLE_KEYS):
        validate_lib.against_checkpoint(_config(dtype="bfloat16"), saved, keys=keys)
    other = _config(dtype="bfloat16")
    other.model.latent_dim = 5
    with pytest.raises(ConfigError, match="config.model.latent_dim=5"):
        validate_lib.against_checkpoint(other, saved)


# ------------------------------------------------------------------ one step against float32
@pytest.fixture(scope="module")
def one_step():
    """One energy step and one base step from the same float32 state, under both dtypes.

    configs/test.py on the ring without the generator's BatchNorm, so that both networks are
    plain chains of Dense layers and (leaky) ReLUs, which the rounding analysis below writes
    out; one device.
    """
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = _config(dtype=dtype)
        config.model.generator_kwargs.batch_norm = False
        results[dtype] = Trainer(config, jax.devices()[:1])
    state = results["float32"].init_state()
    x = np.asarray(next(data.train_batches(results["float32"].config.data,
                                           batch_size=16, seed=0)))
    out = {}
    for dtype, trainer in results.items():
        batch = trainer.parallel.shard_batch(x)
        copy = lambda: jax.tree_util.tree_map(jnp.copy, state)  # the steps donate the state
        _, energy_metrics = trainer.energy_step_fn()(copy(), batch)
        _, base_metrics = trainer.base_step_fn()(copy(), batch)
        out[dtype] = (trainer.host_metrics(energy_metrics), trainer.host_metrics(base_metrics),
                      jax.tree_util.tree_map(lambda a: a.dtype, (energy_metrics, base_metrics)))
    return results, state, x, out


def _mlp_with_roundings(params, h, eps, activation):
    """An mlp network of kale_jax.networks.mlp written out, with every quantity bfloat16 rounds
    multiplied by (1 + eps[name]): layer l's input (the cast of the network's input, then the
    previous activation's output), its weights and bias (casts), the matmul's output and the
    bias add's output. eps all zero gives the float32 network; d output / d eps is each
    rounding's first-order effect."""
    layers = [k for k in sorted(params) if k.startswith("dense")] + ["out"]
    for index, name in enumerate(layers):
        if index:
            h = activation(h)
        h = h * (1 + eps[f"{name}/in"])
        p = h @ (params[name]["kernel"] * (1 + eps[f"{name}/kernel"]))
        p = p * (1 + eps[f"{name}/matmul"])
        h = (p + params[name]["bias"] * (1 + eps[f"{name}/bias"])) * (1 + eps[f"{name}/add"])
    return h


def _zero_roundings(params, n, inputs):
    layers = [k for k in sorted(params) if k.startswith("dense")] + ["out"]
    eps = {}
    for index, name in enumerate(layers):
        kernel = params[name]["kernel"]
        width = inputs if index == 0 else kernel.shape[0]
        eps.update({f"{name}/in": jnp.zeros((n, width)), f"{name}/kernel": jnp.zeros_like(kernel),
                    f"{name}/matmul": jnp.zeros((n, kernel.shape[1])),
                    f"{name}/bias": jnp.zeros_like(params[name]["bias"]),
                    f"{name}/add": jnp.zeros((n, kernel.shape[1]))})
    return eps


def _rounding_tolerances(fn, eps):
    """Tolerances on each output of fn (a vector of metrics) from its first-order rounding
    coefficients c_q = d fn / d eps_q: the worst case u sum_q |c_q| (every |eps_q| <= u) and the
    standard deviation u / sqrt(3) sqrt(sum_q c_q^2) of the usual probabilistic model of rounding
    errors (independent, uniform on [-u, u]: Higham & Mary, SIAM J. Sci. Comput. 2019)."""
    jacobian = jax.jit(jax.jacrev(fn))(eps)
    leaves = [np.asarray(j, np.float64) for j in jax.tree_util.tree_leaves(jacobian)]
    rows = np.concatenate([j.reshape(j.shape[0], -1) for j in leaves], axis=1)
    return (UNIT_ROUNDOFF * np.sum(np.abs(rows), axis=1),
            UNIT_ROUNDOFF / np.sqrt(3.0) * np.sqrt(np.sum(rows ** 2, axis=1)))


def test_one_step_energies_and_losses_match_float32_within_the_rounding_bound(one_step):
    """The energies and losses of one energy step and one base step under bfloat16 agree with
    float32's within tolerances derived from bfloat16's rounding (unit roundoff u = 2^-8).

    Derivation. Both networks are mlps: L = depth + 1 = 2 Dense layers, leaky ReLU (energy) or
    ReLU (generator) between them. In bfloat16 each layer rounds five quantities, each with
    relative error eps_q, |eps_q| <= u: its input (the cast of x or z; later, the bfloat16
    activation), its weights and bias (cast from float32; a weight rounds the same way wherever
    it is used), the matmul's output (XLA accumulates a bfloat16 matmul in float32 and rounds
    once: see the compiled HLO of a bfloat16 dot on CPU; TPU MXUs and GPU tensor cores also
    accumulate in float32) and the bias add's output: 10 sites per network and example. A metric
    m (mean energies, the losses, all computed from these energies in float32) is then
    m(eps), and to first order m16 - m32 = sum_q c_q eps_q with c_q = dm / d eps_q computed
    exactly by autodiff of the networks written out (_mlp_with_roundings; base samples carry
    the generator's sites through E(B(z))). Hence two tolerances:
    * worst case: |m16 - m32| <= 1.1 u sum_q |c_q|; second-order terms are products of at most
      2 L + 1 factors (1 + eps), under 0.2 % of the bound, and the factor 1.1 also covers a
      pre-activation whose sign a rounding flips;
    * typical: rounding errors behave as independent and uniform on [-u, u] (Higham & Mary
      2019), so m16 - m32 has standard deviation sigma = u / sqrt(3) sqrt(sum_q c_q^2), a few
      hundred terms: nearly Gaussian. |m16 - m32| <= 6 sigma fails with probability about 2e-9
      if the model holds; the seeds are fixed, so the test is deterministic. This is the sharp
      check (the worst case assumes every rounding aligns, about 10 sigma further).
    """
    trainers, state, x, out = one_step
    trainer = trainers["float32"]
    state = jax.device_get(trainer.parallel.unreplicate(state))
    (energy32, base32, _), (energy16, base16, dtypes) = out["float32"], out["bfloat16"]
    assert {d for d in jax.tree_util.tree_leaves(dtypes)} == {F32}
    spec = trainer.spec
    g_params, e_params = state.generator_params, state.energy_params
    assert trainer.config.model.energy_kwargs.get("activation", "leaky_relu") == "leaky_relu"
    assert trainer.config.model.generator_kwargs.get("activation", "relu") == "relu"
    n, d = x.shape
    a = state.log_partition

    def energy(v, eps):
        return _mlp_with_roundings(e_params, v, eps, lambda h: jax.nn.leaky_relu(h, 0.2))[:, 0]

    def base(z, eps):
        return _mlp_with_roundings(g_params, z, eps, jax.nn.relu)

    def latents(stream, counter):
        """The step's latents, from the step's own key (kale_jax.train.steps)."""
        key = steps.step_key(state.key, stream, counter)
        if stream == steps.ENERGY_STREAM:
            key = jax.random.split(key)[0]
        return jax.random.normal(key, (spec.global_batch_size, spec.latent_dim), jnp.float32)

    eps = {"generator": _zero_roundings(g_params, n, spec.latent_dim),
           "energy": _zero_roundings(e_params, 2 * n, d)}
    xs = jnp.asarray(x)

    def energy_step_metrics(eps, z):
        e = energy(jnp.concatenate([xs, base(z, eps["generator"])]), eps["energy"])
        return jnp.stack([jnp.mean(e[:n]), jnp.mean(e[n:]), kale.energy_loss(e[:n], e[n:], a)])

    def base_step_metrics(eps, z):
        e = energy(jnp.concatenate([xs, base(z, eps["generator"])]), eps["energy"])
        return kale.base_loss(e[:n], e[n:])[None]

    z_energy = latents(steps.ENERGY_STREAM, int(state.energy_step))
    z_base = latents(steps.BASE_STREAM, int(state.base_step))
    # The written-out networks compute what the float32 steps did, on the steps' own draws.
    energy_step_metrics, base_step_metrics = jax.jit(energy_step_metrics), jax.jit(
        base_step_metrics)
    np.testing.assert_allclose(
        energy_step_metrics(eps, z_energy),
        [energy32["energy_data"], energy32["energy_fake"], energy32["energy_loss"]], atol=2e-5)
    np.testing.assert_allclose(base_step_metrics(eps, z_base), [base32["base_loss"]], atol=2e-5)

    worst, sigma = _rounding_tolerances(lambda eps: jnp.concatenate([
        energy_step_metrics(eps, z_energy), base_step_metrics(eps, z_base)]), eps)
    names = ("energy_data", "energy_fake", "energy_loss", "base_loss")
    for name, w, s_ in zip(names, worst, sigma):
        got, want = {**energy16, **base16}[name], {**energy32, **base32}[name]
        error = abs(got - want)
        assert 0 < error <= min(1.1 * w, 6 * s_), (name, got, want, w, s_)
    assert abs(energy16["kale_batch"] + energy16["energy_loss"]) < 1e-6  # same value, negated
    assert abs(base16["kale_dv_batch"] - base16["base_loss"]) < 1e-6


def test_training_steps_run_no_exp_or_log_in_bfloat16(one_step):
    """The compiled energy and base steps of the bfloat16 run (networks, losses, log-mean-exp,
    gradient penalty and their gradients): every exp / log has float32 operands."""
    trainers, state, x, _ = one_step
    trainer = trainers["bfloat16"]
    batch = trainer.parallel.shard_batch(x)
    for step in (trainer.energy_step_fn(), trainer.base_step_fn()):
        closed = jax.make_jaxpr(step)(state, batch)
        assert _assert_no_bfloat16_transcendental(closed)  # and some exp / log are there
        assert any(all(a.dtype == BF16 for a in avals)
                   for _, avals in _ops(closed, ("dot_general",)))


# --------------------------------------------------------------------------------- sampling
def test_mcmc_potential_gradient_and_acceptance_are_float32_under_bfloat16_networks(one_step):
    """latent.potential over bfloat16 networks: U, grad U, the MALA and HMC acceptance tests
    and hmc.sample's outputs are float32, and no exp / log in a kernel step runs in bfloat16."""
    trainers, state, _, _ = one_step
    state = jax.device_get(trainers["float32"].parallel.unreplicate(state))
    spec = trainers["bfloat16"].spec
    assert isinstance(spec.energy, precision.Precision)
    potential_fn = latent.potential(spec.generator, spec.energy,
                                    {"params": state.generator_params},
                                    {"params": state.energy_params}, beta=1.0)
    z = jax.random.normal(jax.random.key(1), (4, spec.latent_dim), jnp.float32)
    g = jax.eval_shape(jax.grad(lambda v: jnp.sum(potential_fn(v))), z)
    assert jax.eval_shape(potential_fn, z).dtype == F32 and g.dtype == F32
    mala_state = jax.jit(mala.init, static_argnums=1)(z, potential_fn)
    kernel = mala.build_kernel()
    step = jax.jit(lambda key, s: kernel(key, s, potential_fn,
                                         jnp.full((4,), 0.05, jnp.float32)))
    key = noise.step_key(noise.chain_keys(jax.random.key(2), 4), 0)
    new_state, info = step(key, mala_state)
    for value in (*mala_state, *new_state, info.acceptance_rate):
        assert value.dtype == F32
    assert np.all(np.isfinite(info.acceptance_rate))
    assert _assert_no_bfloat16_transcendental(jax.make_jaxpr(step)(key, mala_state))
    run = lambda z: hmc.sample(jax.random.key(3), potential_fn, z, kernel="hmc", num_steps=2,
                               step_size=0.05, num_leapfrog_steps=2)
    assert _assert_no_bfloat16_transcendental(jax.make_jaxpr(run)(z))
    result = jax.jit(run)(z)
    for value in (result.position, result.potential, result.acceptance_rate):
        assert value.dtype == F32 and np.all(np.isfinite(value))


# ------------------------------------------------------------------------ training and resume
def _finite_rows(workdir, after_step):
    """metrics.jsonl rows after `after_step`: every number in them is finite."""
    rows = [r for r in outputs.read_metrics(workdir) if r["step"] > after_step]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert np.isfinite(value), (row["step"], key, value)
    return rows


def test_float32_checkpoint_resumes_under_bfloat16_and_back(tmp_path):
    """configs/test.py (the ring, BatchNorm generator): 2 base steps in float32, checkpointed by
    orbax; the run resumes from that checkpoint with model.dtype=bfloat16 to step 4 (training
    and evaluation metrics finite, state float32), then again in float32 to step 6."""
    workdir = str(tmp_path / "run")
    devices = jax.devices()[:1]
    train_and_evaluate(_config(num_steps=2), workdir, devices=devices)
    state = train_and_evaluate(_config(dtype="bfloat16", num_steps=4), workdir, devices=devices)
    assert int(state.base_step) == 4
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)
            if jnp.issubdtype(leaf.dtype, jnp.floating)} == {F32}
    rows = _finite_rows(workdir, after_step=2)
    logged = {key for row in rows for key in row}
    assert {"energy_loss", "base_loss", "kale_heldout", "mmd_gebm"} <= logged
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["dtype"] == "bfloat16"  # the run's own config
    state = train_and_evaluate(_config(num_steps=6), workdir, devices=devices)
    assert int(state.base_step) == 6
    _finite_rows(workdir, after_step=4)


def test_bfloat16_training_on_images_keeps_metrics_finite():
    """configs/test.py:digits (8x8 images, the image path) in bfloat16: every training metric of
    three iterations (the first a warm-up round) is finite, and the parameters moved."""
    trainer = Trainer(_config("digits", dtype="bfloat16"), jax.devices()[:1])
    state = trainer.init_state()
    initial = jax.device_get(trainer.parallel.unreplicate(state))
    batches = data.train_batches(trainer.config.data, batch_size=16, seed=0)
    for t in range(3):
        state, metrics = trainer.run_iteration(state, t, batches)
        values = trainer.host_metrics(metrics)
        assert values and all(np.isfinite(v) for v in values.values()), (t, values)
    final = jax.device_get(trainer.parallel.unreplicate(state))
    assert max_abs_difference(initial.generator_params, final.generator_params) > 0
    assert max_abs_difference(initial.energy_params, final.energy_params) > 0
