"""The per-device training steps: the energy step, the base step and the initialisation of A.

Every function here runs on one device's shard of the global batch inside a DataParallel wrapper
(parallel.py) and communicates over the axis parallel.AXIS_NAME:

* random draws (latents, interpolation weights) are made for the GLOBAL batch from a key that
  depends only on the state's root key and step counters (`step_key`), and each device keeps its
  rows (parallel.global_slice), so the result does not depend on the number of devices;
* energies are all-gathered so the losses are the global-batch losses (the base loss's
  log-mean-exp does not split into per-device means); a device's gradient of the global loss with
  respect to its parameter copy is then summed over devices by the all-gather's transpose, and the
  explicit lax.pmean of gradients gives exactly the single-device gradient;
* the generator's BatchNorm is built with axis_name=AXIS_NAME, so its batch statistics are those of
  the global batch; mutable state is pmean'd (a no-op when it already agrees).

Network modes (docs/math.md sections 3-4):
* energy step: generator in train mode (global batch statistics, the distribution the base step
  trains) with its state update DISCARDED (running averages move only in the base step); energy in
  train mode on [data; fake] jointly, its state update kept (BatchNorm averages, spectral-norm power
  iteration); the penalty's energy runs in inference mode, because the input-gradient penalty
  needs an energy that does not couple examples (kale.gradient_penalty).
* base step: generator in train mode with its state update kept; energy in inference mode.
* A's initialisation: generator in train mode (update discarded) as in the energy step, energy in
  inference mode.
* evaluation and sampling (kale_jax.latent, kale_jax.sampling): both networks in inference mode,
  so a BatchNorm generator is trained on batch statistics but sampled on its running averages.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kale_jax import kale
from kale_jax.train import optim, parallel
from kale_jax.train.state import TrainState, variables

Array = jax.Array
Metrics = Dict[str, Array]

# Independent key streams derived from the root key; counters are folded in after the stream.
ENERGY_STREAM, BASE_STREAM, A_INIT_STREAM, EVAL_STREAM = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What the steps need besides the state (static: closed over, never traced).

    Attributes:
      generator, energy: the Linen modules (generator built with axis_name=parallel.AXIS_NAME).
      latent_dim: latent dimension d; latents are z ~ N(0, I_d).
      global_batch_size: examples per step over all devices (data and latents alike).
      criterion: 'kale', 'donsker' (the energy ascends the Donsker-Varadhan form without A) or a
        GAN baseline in kale.GAN_CRITERIA.
      penalty: one of kale.PENALTIES; penalty_weight: its weight lambda.
      energy_floor: None, or the soft floor applied to every energy (kale.soft_floor).
      energy_optim, base_optim: descriptions of the optimisers (energy + A, generator).

    StepSpec is hashable and equal for equal configs, so compiled steps can be cached by it.
    """
    generator: nn.Module
    energy: nn.Module
    latent_dim: int
    global_batch_size: int
    criterion: str
    penalty: str
    penalty_weight: float
    energy_floor: Optional[float]
    energy_optim: optim.OptimSpec
    base_optim: optim.OptimSpec

    @property
    def energy_tx(self) -> optax.GradientTransformation:
        return optim.adam(self.energy_optim)

    @property
    def base_tx(self) -> optax.GradientTransformation:
        return optim.adam(self.base_optim)


def step_key(root_key: Array, stream: int, counter: Array | int) -> Array:
    """The key of step `counter` in stream `stream`: fold_in(fold_in(root, stream), counter)."""
    return jax.random.fold_in(jax.random.fold_in(root_key, stream), counter)


def apply_network(module: nn.Module, params: Any, state: Dict[str, Any], x: Array, *,
                  train: bool) -> Tuple[Array, Dict[str, Any]]:
    """module(x) and its updated 'batch_stats' (unchanged in inference mode or without state)."""
    if train and state:
        out, updates = module.apply(variables(params, state), x, train=True,
                                    mutable=["batch_stats"])
        return out, dict(updates["batch_stats"])
    return module.apply(variables(params, state), x, train=train), state


def _floor(spec: StepSpec, energies: Array) -> Array:
    return energies if spec.energy_floor is None else kale.soft_floor(energies, spec.energy_floor)


def _local_latents(spec: StepSpec, key: Array, local_size: int) -> Array:
    """This device's rows of z ~ N(0, I) drawn for the global batch: (local_size, latent_dim)."""
    z = jax.random.normal(key, (spec.global_batch_size, spec.latent_dim), jnp.float32)
    return parallel.global_slice(z, local_size)


def energy_step(spec: StepSpec, state: TrainState, x: Array) -> Tuple[TrainState, Metrics]:
    """One update of the energy parameters and A (per device).

    Minimises L_E = energy_loss(E(x), E(B(z)), A) + lambda * penalty over (energy params, A) for
    criterion 'kale', or the GAN discriminator loss on the same network (A then gets no gradient).
    Criterion 'donsker' (the authors' code's): minimises kale.donsker_energy_loss = mean E(x) +
    log mean exp(-E(B(z))) over the energy alone; A gets no gradient (Adam leaves it unchanged)
    and is then set to the batch estimate log mean exp(-E(B(z))) of this step's energies (before
    the update), so A stays a log-partition estimate for the metrics and the sampler's users.
    With the plateau scheduler (state.plateau) the update is multiplied by its scale.

    Args:
      spec: static step description.
      state: the replicated TrainState.
      x: this device's data, (global_batch_size / devices, *data_shape).
    Returns:
      the new state (energy_step + 1) and metrics identical on every device.
    """
    n = x.shape[0]
    key = step_key(state.key, ENERGY_STREAM, state.energy_step)
    key_z, key_mix = jax.random.split(key)
    z = _local_latents(spec, key_z, n)
    fake, _ = apply_network(spec.generator, state.generator_params, state.generator_state, z,
                            train=True)
    fake = jax.lax.stop_gradient(fake)
    # Interpolation weights for the gradient penalty, drawn for the global batch (see module doc).
    mix = parallel.global_slice(jax.random.uniform(key_mix, (spec.global_batch_size,), x.dtype), n)

    def loss_fn(trainables):
        e, energy_state = apply_network(spec.energy, trainables["energy"], state.energy_state,
                                        jnp.concatenate([x, fake]), train=True)
        e = _floor(spec, e)
        e_data, e_fake = parallel.all_gather(e[:n]), parallel.all_gather(e[n:])
        if spec.criterion == "kale":
            loss = kale.energy_loss(e_data, e_fake, trainables["log_partition"])
        elif spec.criterion == "donsker":
            loss = kale.donsker_energy_loss(e_data, e_fake)
        else:
            loss = kale.gan_energy_loss(spec.criterion, e_data, e_fake)

        def inference_energy(v):
            return _floor(spec, spec.energy.apply(
                variables(trainables["energy"], state.energy_state), v, train=False))

        penalty = kale.penalty(spec.penalty, energy_fn=inference_energy,
                               params=trainables["energy"], x_real=x, x_fake=fake, weights=mix)
        total = loss + spec.penalty_weight * penalty
        return total, (loss, penalty, energy_state, e_data, e_fake)

    trainables = state.energy_trainables()
    grads, (loss, penalty, energy_state, e_data, e_fake) = jax.grad(loss_fn, has_aux=True)(
        trainables)
    grads = parallel.pmean(grads)
    updates, opt_state = spec.energy_tx.update(grads, state.energy_opt_state, trainables)
    trainables = optax.apply_updates(trainables, optim.scale_updates(updates, state.plateau))
    if spec.criterion == "donsker":  # no A in the loss: A is the batch's log-partition estimate
        trainables["log_partition"] = jax.lax.stop_gradient(
            kale.log_partition(e_fake)).astype(jnp.float32)
    new_state = state.replace(
        energy_params=trainables["energy"],
        energy_state=parallel.pmean(energy_state),
        log_partition=trainables["log_partition"],
        energy_opt_state=opt_state,
        energy_step=state.energy_step + 1,
    )
    metrics = {
        "energy_loss": loss,
        "penalty": parallel.pmean(penalty),
        "energy_data": jnp.mean(e_data),
        "energy_fake": jnp.mean(e_fake),
        # Batch KALE in the dual form with the current A (before this update); 'donsker' has no
        # A of its own: the DV form.
        "kale_batch": kale.estimate(e_data, e_fake, None if spec.criterion == "donsker"
                                    else state.log_partition),
    }
    return new_state, metrics


def base_step(spec: StepSpec, state: TrainState, x: Array) -> Tuple[TrainState, Metrics]:
    """One update of the generator (per device).

    Minimises L_B = base_loss(E(x), E(B(z))) = -mean E(x) - log mean exp(-E(B(z))) (criterion
    'kale' and 'donsker' alike: the authors' code takes the same base step for both), or the GAN
    generator loss; only the fake term depends on the generator. The loss value is the batch KALE
    estimate in the Donsker-Varadhan form.

    Args:
      spec, state: as in energy_step.
      x: this device's data, (global_batch_size / devices, *data_shape).
    Returns:
      the new state (base_step + 1) and metrics identical on every device.
    """
    n = x.shape[0]
    z = _local_latents(spec, step_key(state.key, BASE_STREAM, state.base_step), n)
    energy_vars = state.energy_variables()
    e_data = parallel.all_gather(_floor(spec, spec.energy.apply(energy_vars, x, train=False)))

    def loss_fn(generator_params):
        fake, generator_state = apply_network(spec.generator, generator_params,
                                              state.generator_state, z, train=True)
        e_fake = parallel.all_gather(_floor(spec, spec.energy.apply(energy_vars, fake,
                                                                      train=False)))
        loss = loss_value(spec, e_data, e_fake)
        return loss, (generator_state, e_fake, loss)

    grads, (generator_state, e_fake, loss) = jax.grad(loss_fn, has_aux=True)(
        state.generator_params)
    grads = parallel.pmean(grads)
    new_state = _base_updated(spec, state, grads, generator_state)
    metrics = {"base_loss": loss,
               "kale_dv_batch": kale.estimate(e_data, e_fake),
               "log_partition": state.log_partition}
    return new_state, metrics


def mle_base_step(spec: StepSpec, state: TrainState, x: Array) -> Tuple[TrainState, Metrics]:
    """One maximum-likelihood update of a flow base (per device), the baseline to the KALE step
    (config.model.base_objective='mle'; the loop picks it, so a KALE and an MLE run of one
    config share every other compiled step).

    Minimises the global batch's mean negative log-likelihood -mean log g(x) of the data under
    the flow (networks.flows); every device holds an equal share of the batch, so the pmean of
    the per-device gradients is the global-batch gradient. The energy is not involved.

    Args, returns: as base_step; metrics 'base_loss' (the batch NLL, nats per example).
    """
    def loss_fn(generator_params):
        log_g = spec.generator.apply(variables(generator_params, state.generator_state), x,
                                     method="log_prob")
        return -jnp.mean(log_g)

    loss, grads = jax.value_and_grad(loss_fn)(state.generator_params)
    grads = parallel.pmean(grads)
    new_state = _base_updated(spec, state, grads)
    return new_state, {"base_loss": parallel.pmean(loss), "log_partition": state.log_partition}


def gebm_mle_gradients(spec: StepSpec, state: TrainState,
                       x: Array) -> Tuple[Array, Any, Dict[str, Any], Array, Array]:
    """The 'gebm_mle' base loss and its generator gradient over the global batch (per device).

    Loss: kale.gebm_base_loss = -mean_i log g(x_i) + log mean_j exp(-E(B(z_j))), i over the
    global data batch and j over the global batch of latents of this base step (the same draws as
    base_step's), E in inference mode with the floor applied (the energy the GEBM uses). The
    second term is reparameterised through the flow's samples B(z) = G_theta(z). Both log g and
    the energies are all-gathered, so every device computes the global loss (its log-mean-exp does
    not split into per-device means) and, as in base_step, the pmean of the per-device gradients
    is the gradient of the global loss.

    Args:
      spec, state: as in base_step.
      x: this device's data, (global_batch_size / devices, D).
    Returns:
      (loss before the update, pmean-ed gradient w.r.t. generator_params, the generator's new
      mutable state, the gathered base-sample energies (global_batch_size,), the batch's
      -mean log g(x)).
    """
    n = x.shape[0]
    z = _local_latents(spec, step_key(state.key, BASE_STREAM, state.base_step), n)
    energy_vars = state.energy_variables()

    def loss_fn(generator_params):
        log_g = parallel.all_gather(spec.generator.apply(
            variables(generator_params, state.generator_state), x, method="log_prob"))
        fake, generator_state = apply_network(spec.generator, generator_params,
                                              state.generator_state, z, train=True)
        e_fake = parallel.all_gather(_floor(spec, spec.energy.apply(energy_vars, fake,
                                                                      train=False)))
        return kale.gebm_base_loss(log_g, e_fake), (generator_state, e_fake, -jnp.mean(log_g))

    (loss, (generator_state, e_fake, base_nll)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.generator_params)
    return loss, parallel.pmean(grads), generator_state, e_fake, base_nll


def gebm_mle_base_step(spec: StepSpec, state: TrainState,
                       x: Array) -> Tuple[TrainState, Metrics]:
    """One maximum-likelihood update of a flow base AS PART OF THE GEBM (per device)
    (config.model.base_objective='gebm_mle').

    The GEBM q = g exp(-E) / Z, Z = E_g[exp(-E)], has mean log-likelihood
    E_P[log q] = E_P[log g] - E_P[E] - log E_g[exp(-E)]. In E it is the Donsker-Varadhan form of
    KALE, which the unchanged energy step ascends: kale.energy_loss minimised jointly over E and
    the scalar A is -(E_P[log q] - E_P[log g]) at A's optimum log Z, so A is the energy step's
    running variational estimate of log Z (plus the gradient penalty, as for every criterion).
    In the base parameters it is E_P[log g] - log E_g[exp(-E)]; this step descends its batch
    estimate (gebm_mle_gradients; the log partition from the step's own base samples, because A
    carries no gradient to the base). Both steps thus ascend the same objective, exact maximum
    likelihood of the GEBM, unlike base_step (whose optimum concentrates the base where E is low)
    and unlike mle_base_step (which fits the flow alone and ignores E). In expectation the base
    gradient is E_P[grad log g] - E_q[grad log g] (q the GEBM): it vanishes once q = P however the
    density is split between g and exp(-E), so the likelihood does not identify the split and a
    fast energy leaves the base to learn slowly.

    Args, returns: as base_step. Metrics: 'base_loss' (the loss before the update),
    'gebm_nll_batch' (that plus mean E(x): the batch estimate of the GEBM's NLL, nats per
    example), 'base_nll_batch' (-mean log g(x), the flow's own batch NLL), 'base_ess'
    (effective sample size of the weights exp(-E(B(z))) as a fraction of the global batch: small
    values mean the log-mean-exp is dominated by a few samples),
    'log_partition' (A).
    """
    loss, grads, generator_state, e_fake, base_nll = gebm_mle_gradients(spec, state, x)
    e_data = parallel.all_gather(_floor(spec, spec.energy.apply(state.energy_variables(), x,
                                                                  train=False)))
    new_state = _base_updated(spec, state, grads, generator_state)
    metrics = {"base_loss": loss,
               "gebm_nll_batch": loss + jnp.mean(e_data),
               "base_nll_batch": base_nll,
               "base_ess": kale.effective_sample_size(e_fake) / e_fake.shape[0],
               "log_partition": state.log_partition}
    return new_state, metrics


def frozen_base_step(spec: StepSpec, state: TrainState, x: Array) -> Tuple[TrainState, Metrics]:
    """The base step of a refinement iteration (config.train.refine_from): the base is frozen.

    Only base_step advances, so the schedule, the step keys and checkpoints count iterations as
    in the joint phase; the energy steps of the iteration refine the energy against this fixed
    base.

    Args, returns: as base_step; the only metric is 'log_partition' (A).
    """
    del spec, x
    return state.replace(base_step=state.base_step + 1), {"log_partition": state.log_partition}


def _base_updated(spec: StepSpec, state: TrainState, grads, generator_state=None) -> TrainState:
    """`state` after one base-optimiser update with `grads` (already averaged over devices) and
    base_step + 1; the base's BatchNorm statistics `generator_state`, when given, are averaged
    over devices and stored."""
    updates, opt_state = spec.base_tx.update(grads, state.base_opt_state, state.generator_params)
    fields = {"generator_params": optax.apply_updates(
        state.generator_params, optim.scale_updates(updates, state.plateau)),
              "base_opt_state": opt_state, "base_step": state.base_step + 1}
    if generator_state is not None:
        fields["generator_state"] = parallel.pmean(generator_state)
    return state.replace(**fields)


def loss_value(spec: StepSpec, e_data: Array, e_fake: Array) -> Array:
    """The base loss for given energies (for reporting)."""
    if spec.criterion in ("kale", "donsker"):
        return kale.base_loss(e_data, e_fake)
    return kale.gan_base_loss(spec.criterion, e_data, e_fake)


def init_log_partition(spec: StepSpec, num_batches: int, state: TrainState) -> TrainState:
    """Sets A to the Monte-Carlo estimate log mean exp(-E(B(z))) over `num_batches` global batches.

    Streams the batches through kale.log_partition_update (bounded memory); each device draws its
    rows of every global batch, and the energies are gathered before each update, so the estimate
    is the same for any device count.
    """
    local_size = spec.global_batch_size // parallel.axis_size()
    root = jax.random.fold_in(state.key, A_INIT_STREAM)
    energy_vars = state.energy_variables()

    def body(i, running):
        z = _local_latents(spec, jax.random.fold_in(root, i), local_size)
        fake, _ = apply_network(spec.generator, state.generator_params, state.generator_state, z,
                                train=True)
        e_fake = _floor(spec, spec.energy.apply(energy_vars, fake, train=False))
        return kale.log_partition_update(running, parallel.all_gather(e_fake))

    running = jax.lax.fori_loop(0, num_batches, body, kale.log_partition_init())
    return state.replace(log_partition=kale.log_partition_finalize(running).astype(jnp.float32))
