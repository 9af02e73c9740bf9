r"""Benchmarks: python -m experiments.benchmark --section=train|sampler|sampling|all|roofline
[--net=sngan|resnet|all] [--variant=authors|ours] [--batch=64] [--latent=100]
[--dtype=float32|bfloat16]

Prints one JSON object per measurement on stdout, then a human-readable table.

The image networks are the authors' (--variant=authors, the default: the networks of the authors'
code, so the comparison with AUTHORS_MS is on equal networks) or ours (--variant=ours; see
docs/design.md, "Networks"), for the generator and the energy alike.

Every row has `section`, `net`, `variant`, `batch`, `latent`, `image_size`, the widths of the two
networks, `dtype` (--dtype, the networks' compute dtype: bfloat16 on a CPU shows the cost of the
casts, not an accelerator's speed-up),
`compile_s` (seconds of `jit(...).lower(...).compile()`, apart from the timings), `cpu_ms` (the
process CPU time of one step or run, user + system over all threads: on a shared machine it is
far steadier than wall time, and wall ~= cpu / cores when the cores are free), `peak_rss_mb`
(the process's peak resident memory so far), the 1-minute load average when the row started,
and, from XLA's cost analysis of the compiled program, `gflop` per step and the achieved rate
`gflop_per_s` and `matmul_fraction` = achieved rate / the machine's dense matmul rate.

Sections (networks randomly initialised: speed does not depend on training):

* `machine`: the dense matmul rate, measured first in the same binary: a 2048^3 float32 matmul
  jitted under XLA (`xla_matmul_gflop_per_s`, THE REFERENCE for matmul_fraction: same compiler,
  same flags, same threads as the steps) and numpy's (`numpy_matmul_gflop_per_s`, for context).
* `train`: one energy step (`energy_step_ms`), one base step (`generator_step_ms`) and one GEBM
  iteration, --n_critic energy steps then one base step (`iteration_ms`), with the real training
  steps (kale_jax.train.steps wrapped by train.parallel.DataParallel on --devices devices,
  state donated), criterion 'kale' with the gradient penalty.
* `sampler`: ms per MCMC step of `kale_jax.hmc.sample` on the latent posterior
  U(z) = |z|^2 / 2 + E(B(z)), per kernel (`ms_per_step`), chains split over --devices devices
  (shard_map); optionally blackjax's MALA and HMC on the same potential, split the same way.
* `sampling`: chunked GEBM sampling with `kale_jax.sampling.Sampler` (--sampling_kernel,
  --sampling_steps, --num_latents in chunks of --batch): `latents_per_s` over the whole draw
  (host copies included) and the peak memory.
* `roofline` (only when named): compile-only cost of the energy, base and ULA steps on one
  device per per-device batch (--roofline_batches and --batch): `gflop`, `gbytes` (XLA's 'bytes
  accessed'), `gbytes_fused` (convolutions and dots only), `intensity`, and per device of
  experiments/roofline.py its `<device>_roofline_ms` and `<device>_bound`; at --batch the step is
  also timed here for `cpu_efficiency`. --markdown writes docs/performance_model.md.

Timings: the median over --repeats timed runs after one warm-up run; ms figures are wall-clock
per step. XLA:CPU flags: --xnnpack (default on) adds --xla_cpu_use_xnnpack=true; --xla_flags
appends anything else; both are applied before jax starts, as is --cpu_devices (one CPU device
per core by default: on a CPU-only machine every section runs data-parallel over the cores;
`devices` in each row says over how many devices).
"""
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from absl import app, flags

SECTION_NAMES = ["train", "sampler", "sampling"]
EXTRA_SECTIONS = ["roofline"]  # run only when named ('all' is the timing sections)
flags.DEFINE_enum("section", "all", SECTION_NAMES + EXTRA_SECTIONS + ["all"],
                  "Which benchmark to run.")
flags.DEFINE_enum("net", "all", ["sngan", "resnet", "dcgan", "mlp", "all"],
                  "Generator/energy pair ('all': sngan and resnet; 'mlp': vectors of dimension "
                  "--mlp_dim, for quick tests of the binary).")
flags.DEFINE_enum("variant", "authors", ["authors", "ours"],
                  "Network family of the image nets (kale_jax.networks `variant`): 'authors' "
                  "(the authors' networks, like for like with their timings) or 'ours'.")
flags.DEFINE_integer("mlp_dim", 3, "Data dimension of --net=mlp.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Compute dtype of the timed networks (config.model.dtype, applied by "
                  "kale_jax.networks.precision: float32 parameters, bfloat16 matmuls and convs).")
flags.DEFINE_integer("batch", 64, "Examples per training step; chains per MCMC step and chunk.")
flags.DEFINE_integer("latent", 100, "Latent dimension.")
flags.DEFINE_integer("image_size", 32, "Image side.")
flags.DEFINE_integer("generator_width", 0, "Generator width (0: the default of --variant: "
                     "resnet 128 for 'authors', 256 for 'ours').")
flags.DEFINE_integer("energy_width", 0, "Energy width (0: the library default).")
flags.DEFINE_integer("repeats", 3, "Timed runs per measurement (the median is reported).")
flags.DEFINE_integer("num_steps", 4, "MCMC steps per timed sampler run.")
flags.DEFINE_integer("n_critic", 5, "Energy steps per GEBM iteration (section train).")
flags.DEFINE_list("kernels", ["ula", "mala", "hmc", "kla", "imh"], "Our kernels to time.")
flags.DEFINE_integer("num_leapfrog_steps", 2, "Leapfrog steps per HMC step (ours and blackjax).")
flags.DEFINE_bool("blackjax", False, "Also time blackjax MALA and HMC on the same potential.")
flags.DEFINE_list("unroll_sweep", [], "Extra ULA rows with these scan unroll values "
                  "(used to choose kale_jax.hmc.DEFAULT_UNROLL).")
flags.DEFINE_bool("hwio_ablation", False, "Extra ULA row with hwio_convolutions=False.")
flags.DEFINE_string("sampling_kernel", "ula", "Kernel of section sampling.")
flags.DEFINE_integer("sampling_steps", 10, "MCMC steps per chain in section sampling.")
flags.DEFINE_integer("num_latents", 256, "Latents drawn per timed run of section sampling.")
flags.DEFINE_bool("xnnpack", True, "Run XLA:CPU convolutions through XNNPACK "
                  "(--xla_cpu_use_xnnpack=true; 1.7x faster on the SNGAN pair).")
flags.DEFINE_string("xla_flags", "", "Extra XLA_FLAGS (for flag experiments).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the reference matmul.")
flags.DEFINE_integer("devices", 0, "Devices the steps run on, data-parallel (batch / chains split "
                     "across them; 0: every local device).")
flags.DEFINE_integer("cpu_devices", 0, "CPU devices jax creates (jax_num_cpu_devices; 0: one per "
                     "core). XLA:CPU runs much of a step's convolution work on one thread, so "
                     "one device per core, data-parallel, is what keeps every core busy.")
flags.DEFINE_list("roofline_batches", ["1", "2", "4", "8", "16", "32", "64", "128", "256"],
                  "Section roofline: per-device batches whose steps are compiled for their cost "
                  "(--batch and the recipe's per-device batches are added).")
flags.DEFINE_float("memory_gb_per_s", 0.0, "Section roofline: this CPU's memory bandwidth, GB/s "
                   "(0: measure it with a 256 MB copy).")
flags.DEFINE_float("cpu_efficiency", 0.0, "Section roofline: this CPU's achieved / peak FLOP/s "
                   "for every step (0: measure it by timing each step at --batch here).")
flags.DEFINE_integer("pod_chips", 16, "Section roofline: chips of the TPU v4 slice the recipe "
                     "is projected to (v4-32 = 16 chips), data-parallel.")
flags.DEFINE_string("roofline_cache", "", "Section roofline: a JSON-lines file of earlier "
                    "roofline rows: steps already in it (same net, widths, parameter counts, "
                    "dtype, batch) are not compiled again, new rows are appended; builds the "
                    "tables in several short runs. Delete it when the networks change.")
flags.DEFINE_enum("roofline_programs", "default", ["default", "cpu"],
                  "Section roofline: which programs' costs are counted: 'default' the ones XLA "
                  "gets on GPU/TPU (kale_jax.xla_cpu.on_cpu's plain branch, compiled here), "
                  "'cpu' the CPU's own (with the XLA:CPU work-arounds). The CPU efficiency is "
                  "always timed on the CPU's programs.")
flags.DEFINE_string("markdown", "", "Section roofline: write the performance-model tables to "
                    "this markdown file (e.g. docs/performance_model.md).")
FLAGS = flags.FLAGS

# The authors' PyTorch code (their commit b2fb244 as it runs: their networks, losses and Langevin
# step; torch 2.13 CPU, 2 threads), batch 64, 32x32, latent 100, ms, measured beside this binary
# on 2026-11-29 on a 2-core AMD EPYC whose XLA matmul reference ran at 389-452 GFLOP/s (README,
# Performance). Only meaningful on such a machine and beside --variant=authors rows (the same
# networks); the targets are the issue's (1.5x faster).
AUTHORS_MS = {("sngan", "ula"): 386.0, ("sngan", "energy"): 1069.0, ("sngan", "base"): 606.0,
              ("sngan", "iteration"): 6173.0,
              ("resnet", "ula"): 1116.0, ("resnet", "energy"): 1708.0,
              ("resnet", "base"): 1403.0, ("resnet", "iteration"): 10056.0}
TARGET_SPEEDUP = 1.5
STEP_SIZE = 1e-2
_MACHINE: Dict[str, float] = {}


def _emit(row: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def _cost_flops(compiled) -> Optional[float]:
    """FLOPs of one call of a compiled program from XLA's cost analysis (None if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # pylint: disable=broad-except
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _timed(run: Callable[[], Any], repeats: int):
    """(median wall s, median process-CPU s) of `run()` (which blocks until done)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def machine_rate() -> Dict[str, float]:
    """Dense float32 matmul rates, GFLOP/s (cached): XLA (the reference) and numpy."""
    if _MACHINE:
        return _MACHINE
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    n = FLAGS.matmul_size
    flop = 2.0 * n ** 3
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(matmul(a, b))
    xla_s, _ = _timed(lambda: jax.block_until_ready(matmul(a, b)), max(3, FLAGS.repeats))
    a_np, b_np = np.asarray(a), np.asarray(b)
    a_np @ b_np
    numpy_s, _ = _timed(lambda: a_np @ b_np, max(3, FLAGS.repeats))
    _MACHINE.update(xla=flop / xla_s / 1e9, numpy=flop / numpy_s / 1e9)
    return _MACHINE


def _significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _flop_fields(flops: Optional[float], seconds: float) -> Dict[str, Any]:
    if flops is None:
        return {"gflop": None, "gflop_per_s": None, "matmul_fraction": None}
    rate = flops / seconds / 1e9
    return {"gflop": _significant(flops / 1e9), "gflop_per_s": _significant(rate),
            "matmul_fraction": _significant(rate / machine_rate()["xla"], 3)}


def _nets() -> List[str]:
    return ["sngan", "resnet"] if FLAGS.net == "all" else [FLAGS.net]


def _variant(net: str) -> Optional[str]:
    """--variant for the image nets; None for mlp (one family)."""
    return None if net == "mlp" else FLAGS.variant


def _widths(net: str) -> Dict[str, int]:
    """Generator and energy widths ('hidden' units for mlp)."""
    from kale_jax import networks  # pylint: disable=g-import-not-at-top
    out = {}
    for role, value, cls in (("generator", FLAGS.generator_width, networks.GENERATORS[net]),
                             ("energy", FLAGS.energy_width, networks.ENERGIES[net])):
        default = cls.hidden if net == "mlp" else cls.default_widths[FLAGS.variant]
        out[role] = value or default
    return out


def _data_shape(net: str) -> tuple:
    if net == "mlp":
        return (FLAGS.mlp_dim,)
    return (FLAGS.image_size, FLAGS.image_size, 3)


def _modules(net: str, axis_name: Optional[str] = None):
    from kale_jax import networks  # pylint: disable=g-import-not-at-top
    widths = _widths(net)
    kwargs = {} if axis_name is None else {"axis_name": axis_name}
    if net == "mlp":
        generator = networks.get_generator(net, output_dim=FLAGS.mlp_dim,
                                           hidden=widths["generator"], batch_norm=True, **kwargs)
        energy = networks.get_energy(net, hidden=widths["energy"], spectral_norm=True)
        return _with_dtype(generator, energy)
    generator = networks.get_generator(net, image_size=FLAGS.image_size, variant=FLAGS.variant,
                                       width=widths["generator"], **kwargs)
    if "axis_name" not in networks.module_attributes(networks.ENERGIES[net]):
        kwargs = {}  # an energy without BatchNorm takes no axis name
    energy = networks.get_energy(net, image_size=FLAGS.image_size, variant=FLAGS.variant,
                                 width=widths["energy"], **kwargs)
    return _with_dtype(generator, energy)


def _with_dtype(*modules):
    """The modules computing in --dtype (networks.precision, as config.model.dtype does)."""
    from kale_jax.networks import precision  # pylint: disable=g-import-not-at-top
    return tuple(precision.with_dtype(m, FLAGS.dtype) for m in modules)


def _variables(net: str, generator, energy):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from kale_jax import networks  # pylint: disable=g-import-not-at-top
    gen_vars = networks.init_variables(generator, jax.random.key(0),
                                       jnp.zeros((1, FLAGS.latent)))
    energy_vars = networks.init_variables(energy, jax.random.key(1),
                                          jnp.zeros((1,) + _data_shape(net)))
    return gen_vars, energy_vars


def _devices() -> list:
    """The devices every section runs on (--devices of the local devices)."""
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.local_devices()
    count = FLAGS.devices or len(devices)
    if count > len(devices) or FLAGS.batch % count:
        raise app.UsageError(f"--devices={FLAGS.devices}: need at most {len(devices)} devices "
                             f"that divide --batch={FLAGS.batch}")
    return devices[:count]


def _split_chains(run: Callable) -> Callable:
    """run(gen_vars, energy_vars, key, z) -> (positions, acceptance), run with the chains (rows of
    z) split over _devices(); each device folds its index into the key."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.sharding import Mesh, PartitionSpec as P  # pylint: disable=g-import-not-at-top
    devices = _devices()
    if len(devices) == 1:
        return run
    mesh = Mesh(np.array(devices), ("chains",))

    def local(gen_vars, energy_vars, key, z):
        return run(gen_vars, energy_vars, jax.random.fold_in(key, jax.lax.axis_index("chains")), z)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P("chains")),
                         out_specs=P("chains"), check_vma=False)


def _row(section: str, net: str, **fields) -> Dict[str, Any]:
    widths = _widths(net)
    row = {"section": section, "net": net, "variant": _variant(net), "batch": FLAGS.batch,
           "latent": FLAGS.latent,
           "image_size": FLAGS.image_size, "generator_width": widths["generator"],
           "energy_width": widths["energy"], "dtype": FLAGS.dtype}
    row.update(fields)
    row.update(devices=len(_devices()), peak_rss_mb=_peak_rss_mb(), xnnpack=FLAGS.xnnpack,
               load_avg_1m=round(os.getloadavg()[0], 2))
    return row


# ------------------------------------------------------------------------------------- sampler


def _ours(generator, energy, kernel: str, num_steps: int, **options) -> Callable:
    """run(gen_vars, energy_vars, key, z) -> (positions, acceptance): kale_jax.sampling's path."""
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    if kernel == "hmc":
        options["num_leapfrog_steps"] = FLAGS.num_leapfrog_steps
    model = sampling.Model(generator, energy, FLAGS.latent)
    spec = sampling.SamplerSpec(kernel=kernel, num_steps=num_steps,
                                step_size=STEP_SIZE).with_options(**options)

    def run(gen_vars, energy_vars, key, z):
        _, result = sampling.sample_gebm(key, model, spec, gen_vars, energy_vars, z0=z)
        return result.position, result.acceptance_rate

    return run


def _blackjax(generator, energy, kernel: str, num_steps: int) -> Callable:
    """The same potential through blackjax, vmapped over chains, scanned over steps."""
    import blackjax  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from kale_jax import latent  # pylint: disable=g-import-not-at-top

    def run(gen_vars, energy_vars, key, z):
        potential = latent.potential(generator, energy, gen_vars, energy_vars)

        def logdensity(z_one):
            return -potential(z_one[None])[0]

        if kernel == "mala":
            algorithm = blackjax.mala(logdensity, STEP_SIZE)
        else:
            algorithm = blackjax.hmc(logdensity, STEP_SIZE, jnp.ones(z.shape[1]),
                                     FLAGS.num_leapfrog_steps)
        states = jax.vmap(algorithm.init)(z)

        def one_step(states, step_key):
            keys = jax.random.split(step_key, z.shape[0])
            states, infos = jax.vmap(algorithm.step)(keys, states)
            return states, infos.is_accepted

        states, accepted = jax.lax.scan(one_step, states, jax.random.split(key, num_steps))
        return states.position, accepted.mean(0)

    return run


def _time_jitted(fn: Callable, args: tuple, per: int):
    """(wall ms, cpu ms, compile s, flops) per 1/`per` of one call of jit(fn)(*args)."""
    import jax  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    flops = _cost_flops(compiled)
    jax.block_until_ready(compiled(*args))  # warm-up run
    wall, cpu = _timed(lambda: jax.block_until_ready(compiled(*args)), FLAGS.repeats)
    return (wall / per * 1e3, cpu / per * 1e3, compile_s,
            None if flops is None else flops / per)


def _mcmc_step_program(generator, energy, kernel: str, args: tuple, runnable: bool = False,
                       compiler_options: Optional[Dict[str, Any]] = None):
    """(compiled one MCMC step of `kernel` on the latent posterior, its arguments); the state
    argument is abstract (shapes only) unless `runnable` (then the chains' initial state)."""
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from kale_jax import hmc, latent  # pylint: disable=g-import-not-at-top
    options = {"num_leapfrog_steps": FLAGS.num_leapfrog_steps} if kernel == "hmc" else {}

    def build(gen_vars, energy_vars):
        potential = latent.potential(generator, energy, gen_vars, energy_vars)
        return hmc.build_kernel(kernel, potential, **options)

    gen_vars, energy_vars, _, z = args
    init = lambda g, e, z: build(g, e).init(z, z)  # pylint: disable=unnecessary-lambda-assignment
    state = (jax.jit(init) if runnable else functools.partial(jax.eval_shape, init))(
        gen_vars, energy_vars, z)
    step_size = jnp.full(z.shape[:1], STEP_SIZE, z.dtype)
    uniform = jnp.full(z.shape[:1], 0.5, z.dtype)
    step = jax.jit(lambda g, e, s, n, u: build(g, e).step(s, step_size, n, u))
    step_args = (gen_vars, energy_vars, state, z, uniform)
    return step.lower(*step_args).compile(compiler_options=compiler_options), step_args


def _step_flops(generator, energy, kernel: str, args: tuple) -> Optional[float]:
    """FLOPs of one MCMC step of `kernel` from XLA's cost analysis of the compiled kernel step.

    The whole sampler can't be used: cost analysis counts a loop body once, not per trip. (For
    'hmc' the leapfrog loop inside a step is counted once too: the row's gflop is one step with
    one leapfrog.)"""
    try:
        return _cost_flops(_mcmc_step_program(generator, energy, kernel, args)[0])
    except Exception:  # pylint: disable=broad-except
        return None


def sampler_section() -> List[Dict[str, Any]]:
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import hmc  # pylint: disable=g-import-not-at-top
    rows: List[Dict[str, Any]] = []
    steps = FLAGS.num_steps
    for net in _nets():
        generator, energy = _modules(net)
        gen_vars, energy_vars = _variables(net, generator, energy)
        z = jax.random.normal(jax.random.key(2), (FLAGS.batch, FLAGS.latent))
        args = (gen_vars, energy_vars, jax.random.key(3), z)
        runs = [(k, {}, _ours(generator, energy, k, steps)) for k in FLAGS.kernels]
        runs += [("ula", {"unroll": int(u)}, _ours(generator, energy, "ula", steps, unroll=int(u)))
                 for u in FLAGS.unroll_sweep]
        if FLAGS.hwio_ablation:
            runs.append(("ula", {"hwio_convolutions": False},
                         _ours(generator, energy, "ula", steps, hwio_convolutions=False)))
        if FLAGS.blackjax:
            runs += [(f"blackjax_{k}", {}, _blackjax(generator, energy, k, steps))
                     for k in ("mala", "hmc")]
        runs = [(kernel, extra, _split_chains(fn)) for kernel, extra, fn in runs]
        step_flops = {}
        for kernel, extra, fn in runs:
            ms, cpu_ms, compile_s, _ = _time_jitted(fn, args, steps)
            base_kernel = kernel.replace("blackjax_", "")
            if base_kernel not in step_flops:
                step_flops[base_kernel] = _step_flops(generator, energy, base_kernel, args)
            flops = step_flops[base_kernel]
            row = _row("sampler", net, kernel=kernel, ms_per_step=round(ms, 1),
                       cpu_ms=round(cpu_ms, 1), compile_s=round(compile_s, 2),
                       **_flop_fields(flops, ms / 1e3), num_steps=steps, repeats=FLAGS.repeats,
                       unroll=extra.get("unroll", hmc.DEFAULT_UNROLL),
                       hwio_convolutions=extra.get("hwio_convolutions",
                                                   not kernel.startswith("blackjax")))
            if kernel.endswith("hmc"):
                row["num_leapfrog_steps"] = FLAGS.num_leapfrog_steps
            _emit(row, rows)
    return rows


# --------------------------------------------------------------------------------------- train


def _train_setup(net: str):
    """(spec, replicated state, sharded batch, DataParallel) for _devices()."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from kale_jax.train import optim, parallel, steps  # pylint: disable=g-import-not-at-top
    from kale_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
    generator, energy = _modules(net, axis_name=parallel.AXIS_NAME)
    adam = optim.OptimSpec(learning_rate=1e-4, b1=0.5, b2=0.999, decay_rate=1.0, decay_steps=1)
    spec = steps.StepSpec(generator=generator, energy=energy, latent_dim=FLAGS.latent,
                          global_batch_size=FLAGS.batch, criterion="kale", penalty="gradient",
                          penalty_weight=1.0, energy_floor=None, energy_optim=adam,
                          base_optim=adam)
    init_generator, init_energy = _modules(net)  # same parameters, no axis name at init
    gen_vars, energy_vars = _variables(net, init_generator, init_energy)
    state = state_lib.create(generator_variables=gen_vars, energy_variables=energy_vars,
                             energy_tx=spec.energy_tx, base_tx=spec.base_tx,
                             key=jax.random.key_data(jax.random.key(4)))
    wrapper = parallel.DataParallel("shard_map", _devices())
    x = np.asarray(jax.random.uniform(jax.random.key(5), (FLAGS.batch,) + _data_shape(net),
                                      minval=-1.0))
    return spec, wrapper.replicate(state), wrapper.shard_batch(x), wrapper


def train_section() -> List[Dict[str, Any]]:
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax.train import steps  # pylint: disable=g-import-not-at-top
    rows: List[Dict[str, Any]] = []
    for net in _nets():
        spec, state, x, wrapper = _train_setup(net)
        compiled, compile_s, flops = {}, {}, {}
        for which, fn in (("energy", steps.energy_step), ("base", steps.base_step)):
            wrapped = wrapper.wrap(functools.partial(fn, spec), batch_axes=(0,))
            start = time.perf_counter()
            compiled[which] = wrapped.lower(state, x).compile()
            compile_s[which] = time.perf_counter() - start
            per_device = _cost_flops(compiled[which])  # cost analysis of one device's program
            flops[which] = None if per_device is None else per_device * wrapper.num_devices
        holder = {"state": state}  # the state is donated: always continue from the newest

        def run(which):
            holder["state"], metrics = compiled[which](holder["state"], x)
            jax.block_until_ready((holder["state"], metrics))

        def iteration():
            for _ in range(FLAGS.n_critic):
                run("energy")
            run("base")

        for which in ("energy", "base"):
            run(which)  # warm-up
        figures = {}
        for which, key in (("energy", "energy_step_ms"), ("base", "generator_step_ms")):
            wall, cpu = _timed(lambda w=which: run(w), FLAGS.repeats)
            figures[which] = (wall, cpu)
            _emit(_row("train", net, step=which, **{key: round(wall * 1e3, 1)},
                       cpu_ms=round(cpu * 1e3, 1), compile_s=round(compile_s[which], 2),
                       **_flop_fields(flops[which], wall), repeats=FLAGS.repeats), rows)
        wall, cpu = _timed(iteration, FLAGS.repeats)
        it_flops = (None if None in flops.values()
                    else FLAGS.n_critic * flops["energy"] + flops["base"])
        _emit(_row("train", net, step="iteration", iteration_ms=round(wall * 1e3, 1),
                   cpu_ms=round(cpu * 1e3, 1),
                   compile_s=round(compile_s["energy"] + compile_s["base"], 2),
                   **_flop_fields(it_flops, wall), n_critic=FLAGS.n_critic,
                   repeats=FLAGS.repeats), rows)
    return rows


# ------------------------------------------------------------------------------------ sampling


def sampling_section() -> List[Dict[str, Any]]:
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    rows: List[Dict[str, Any]] = []
    for net in _nets():
        generator, energy = _modules(net)
        gen_vars, energy_vars = _variables(net, generator, energy)
        model = sampling.Model(generator, energy, FLAGS.latent)
        spec = sampling.SamplerSpec(kernel=FLAGS.sampling_kernel, num_steps=FLAGS.sampling_steps,
                                    step_size=STEP_SIZE)
        start = time.perf_counter()
        sampler = sampling.Sampler(model, spec, chunk_size=FLAGS.batch,
                                   devices=_devices(), record_samples=False)
        warm = list(sampler.chunks(jax.random.key(6), gen_vars, energy_vars, FLAGS.batch))
        compile_s = time.perf_counter() - start  # compile + one chunk
        del warm

        def draw():
            for _ in sampler.chunks(jax.random.key(7), gen_vars, energy_vars, FLAGS.num_latents):
                pass

        wall, cpu = _timed(draw, FLAGS.repeats)
        _emit(_row("sampling", net, kernel=FLAGS.sampling_kernel,
                   num_steps=FLAGS.sampling_steps, num_latents=FLAGS.num_latents,
                   chunk_size=FLAGS.batch, latents_per_s=round(FLAGS.num_latents / wall, 2),
                   ms_per_step=round(wall * 1e3 / FLAGS.sampling_steps
                                     / -(-FLAGS.num_latents // FLAGS.batch), 1),
                   cpu_ms=round(cpu * 1e3, 1), compile_s=round(compile_s, 2),
                   repeats=FLAGS.repeats), rows)
    return rows


# ------------------------------------------------------------------------------------ roofline


@contextlib.contextmanager
def _flag_values(**values):
    """Sets FLAGS values for the block (the setup helpers read --batch and --devices)."""
    old = {name: getattr(FLAGS, name) for name in values}
    for name, value in values.items():
        setattr(FLAGS, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(FLAGS, name, value)


def _param_bytes(variables) -> int:
    """Bytes of the float32 gradients of a network's 'params' collection."""
    import jax  # pylint: disable=g-import-not-at-top
    return int(sum(4 * leaf.size for leaf in jax.tree_util.tree_leaves(variables["params"])))


def _step_programs(net: str, runnable: bool, branch: Optional[str] = None):
    """{'energy' | 'base' | 'ula': (compiled one-device program, its arguments)} at --batch.

    `branch` ('cpu' or 'default', kale_jax.xla_cpu.forced_branch) picks the programs of that
    platform branch whatever the backend; None: this backend's own.

    Unless `runnable`, the programs are for their cost analysis only: compiled with LLVM's
    optimisations off (xla_backend_optimization_level=0: the same optimised HLO, so the same
    costs, in about half the compile time) and the ULA state is abstract."""
    import contextlib  # pylint: disable=g-import-not-at-top
    from kale_jax import xla_cpu  # pylint: disable=g-import-not-at-top
    options = {} if runnable else {"xla_backend_optimization_level": 0}
    with xla_cpu.forced_branch(branch) if branch else contextlib.nullcontext():
        return _compile_step_programs(net, runnable, options)


def _compile_step_programs(net: str, runnable: bool, options: Dict[str, Any]):
    """_step_programs' work, traced under the caller's branch."""
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax.train import steps  # pylint: disable=g-import-not-at-top
    spec, state, x, wrapper = _train_setup(net)
    programs = {}
    for which, fn in (("energy", steps.energy_step), ("base", steps.base_step)):
        wrapped = wrapper.wrap(functools.partial(fn, spec), batch_axes=(0,), donate_state=False)
        programs[which] = (wrapped.lower(state, x).compile(compiler_options=options), (state, x))
    generator, energy = _modules(net)
    gen_vars, energy_vars = _variables(net, generator, energy)
    z = jax.random.normal(jax.random.key(2), (FLAGS.batch, FLAGS.latent))
    programs["ula"] = _mcmc_step_program(generator, energy, "ula",
                                         (gen_vars, energy_vars, None, z), runnable=runnable,
                                         compiler_options=options)
    return programs


def _roofline_cache() -> Dict[str, Dict[str, Any]]:
    """Rows of --roofline_cache (JSON lines) by their 'cache_key'."""
    if not FLAGS.roofline_cache or not os.path.exists(FLAGS.roofline_cache):
        return {}
    with open(FLAGS.roofline_cache) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {row["cache_key"]: row for row in rows if "cache_key" in row}


def _matmul_flops_per_cpu_second() -> float:
    """The reference matmul's (--matmul_size^3, float32, XLA) FLOPs per second of process CPU
    time: the denominator of the roofline section's CPU efficiency. Per CPU-second, both for the
    matmul and for the steps, so that other jobs on a shared machine do not bias the ratio."""
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    n = FLAGS.matmul_size
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, a).compile()
    jax.block_until_ready(matmul(a, a))
    _, cpu_s = _timed(lambda: jax.block_until_ready(matmul(a, a)), max(3, FLAGS.repeats))
    return 2.0 * n ** 3 / cpu_s


def roofline_section() -> List[Dict[str, Any]]:
    """Cost (FLOPs, bytes) of the energy, base and ULA steps per per-device batch, the roofline
    on each device of experiments.roofline.DEVICES and this CPU, and optionally the markdown."""
    import datetime  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from experiments import roofline  # pylint: disable=g-import-not-at-top
    recipe = roofline.Recipe(pod_chips=FLAGS.pod_chips)
    if recipe.batch % recipe.pod_chips:
        raise app.UsageError(f"--pod_chips={FLAGS.pod_chips} must divide the recipe's batch "
                             f"{recipe.batch}")
    main_batch = FLAGS.batch
    try:
        batches = {int(b) for b in FLAGS.roofline_batches} | {main_batch}
    except ValueError:
        batches = set()
    if not batches or min(batches) < 1:
        raise app.UsageError(f"--roofline_batches={','.join(FLAGS.roofline_batches)}: expected "
                             "positive integers, e.g. --roofline_batches=1,8,128")
    if not 0 <= FLAGS.cpu_efficiency <= 1:
        raise app.UsageError(f"--cpu_efficiency={FLAGS.cpu_efficiency}: expected a fraction in "
                             "(0, 1], or 0 to measure it here")
    if FLAGS.markdown:  # the recipe's per-device batches: one GPU, one chip of the pod slice
        batches |= {recipe.batch, recipe.batch // recipe.pod_chips}
    dtype = getattr(FLAGS, "dtype", None)  # a model dtype flag, if the binary has one
    dtype = dtype if dtype in ("float32", "bfloat16") else "float32"
    bandwidth = FLAGS.memory_gb_per_s * 1e9 or roofline.copy_bandwidth()
    cpu = roofline.cpu_device(machine_rate()["xla"] * 1e9, bandwidth)
    cpu_rate = 0.0 if FLAGS.cpu_efficiency else _matmul_flops_per_cpu_second()
    devices = list(roofline.DEVICES.values()) + [cpu]
    cache = _roofline_cache()
    rows: List[Dict[str, Any]] = []
    costs, efficiency, param_bytes = [], {}, {}
    for net in _nets():
        generator, energy = _modules(net)
        gen_vars, energy_vars = _variables(net, generator, energy)
        param_bytes[net] = {"energy": _param_bytes(energy_vars) + 4,  # + A
                            "base": _param_bytes(gen_vars)}
        identity = {"net": net, "image_size": FLAGS.image_size, "latent": FLAGS.latent,
                    "widths": _widths(net), "params": param_bytes[net], "dtype": dtype,
                    "variant": getattr(FLAGS, "variant", None),
                    "programs": FLAGS.roofline_programs}
        for batch in sorted(batches):
            timed = batch == main_batch and not FLAGS.cpu_efficiency
            keys = {step: json.dumps({**identity, "batch": batch, "step": step}, sort_keys=True)
                    for step in roofline.STEPS}
            cached = {step: cache.get(key) for step, key in keys.items()}
            if all(cached.values()) and all("bytes_fused" in row for row in cached.values()) \
                    and not (timed and not all("step_ms" in row for row in cached.values())):
                kept = ("step", "dtype", "flops", "bytes", "bytes_fused", "compile_s",
                        "cache_key", "step_ms", "cpu_flops",
                        "cpu_ms", "gflop_per_s", "matmul_fraction", "cpu_efficiency")
                found = {step: ({k: row[k] for k in kept if k in row}, None)
                         for step, row in cached.items()}
            else:
                with _flag_values(batch=batch, devices=1):
                    start = time.perf_counter()
                    programs = _step_programs(net, runnable=False,
                                              branch=FLAGS.roofline_programs)
                    compile_s = (time.perf_counter() - start) / len(programs)
                    # The efficiency is timed on what runs here: the CPU's own programs.
                    cpu_programs = _step_programs(net, runnable=True) if timed else {}
                found = {}
                for step, (compiled, _) in programs.items():
                    cost = roofline.cost_of(compiled)
                    if cost["flops"] is None or cost["bytes"] is None:
                        raise RuntimeError(f"XLA reported no cost for the {net} {step} step: "
                                           f"{compiled.cost_analysis()}")
                    row = {"step": step, "dtype": dtype, "flops": cost["flops"],
                           "bytes": cost["bytes"],
                           "bytes_fused": roofline.matmul_bytes(compiled.as_text()),
                           "compile_s": round(compile_s, 2),
                           "cache_key": keys[step]}
                    if timed:
                        run, args = cpu_programs[step]
                        cpu_flops = roofline.cost_of(run)["flops"]
                        jax.block_until_ready(run(*args))  # warm-up
                        wall, cpu_s = _timed(
                            lambda c=run, a=args: jax.block_until_ready(c(*a)),
                            FLAGS.repeats)
                        row.update(step_ms=round(wall * 1e3, 1), cpu_ms=round(cpu_s * 1e3, 1),
                                   cpu_flops=cpu_flops, **_flop_fields(cpu_flops, wall))
                    found[step] = (row, keys[step])
            for step, (row, new_key) in found.items():
                row = dict(row)
                if batch == main_batch:
                    row["cpu_efficiency"] = FLAGS.cpu_efficiency or _significant(min(
                        1.0, row.get("cpu_flops", row["flops"]) / (row["cpu_ms"] / 1e3)
                        / cpu_rate), 3)
                    efficiency[f"{net}/{step}"] = row["cpu_efficiency"]
                costs.append({"net": net, "step": step, "batch": batch,
                              "flops": row["flops"], "bytes": row["bytes"],
                              "bytes_fused": row.get("bytes_fused")})
                row.update(gflop=_significant(row["flops"] / 1e9),
                           gbytes=_significant(row["bytes"] / 1e9),
                           gbytes_fused=row.get("bytes_fused") and _significant(
                               row["bytes_fused"] / 1e9),
                           intensity=_significant(row["flops"] / row["bytes"], 3),
                           cached=new_key is None)
                for device in devices:
                    line = roofline.roofline(row["flops"], row["bytes"],
                                             roofline.peak_for(device, dtype), device.bandwidth)
                    row[f"{device.name}_roofline_ms"] = _significant(line.time_s * 1e3)
                    row[f"{device.name}_bound"] = line.bound
                with _flag_values(batch=batch, devices=1):
                    row = _row("roofline", net, **row)
                _emit(row, rows)
                if new_key is not None and FLAGS.roofline_cache:
                    with open(FLAGS.roofline_cache, "a") as f:
                        f.write(json.dumps(row) + "\n")
    if FLAGS.markdown:
        command = ("python -m experiments.benchmark --section=roofline " + " ".join(
            arg for arg in sys.argv[1:] if not arg.startswith(("--section", "--roofline_cache"))))
        notes = [f"Generated {datetime.date.today().isoformat()} on {os.cpu_count()} CPU cores, "
                 f"jax {jax.__version__}: dense float32 matmul under XLA "
                 f"{machine_rate()['xla']:.1f} GFLOP/s, memory copy "
                 f"{bandwidth / 1e9:.1f} GB/s"
                 + (" (given)" if FLAGS.memory_gb_per_s else " (measured)") + ".",
                 *(["Built in several short runs through --roofline_cache (rows marked "
                    "'cached' in the JSON output come from earlier runs)."]
                   if FLAGS.roofline_cache else []),
                 "CPU efficiency: " + (
                     f"given ({FLAGS.cpu_efficiency})" if FLAGS.cpu_efficiency else
                     f"each step's FLOPs per second of process CPU time at batch {main_batch} on "
                     f"one CPU device (median of {FLAGS.repeats} runs) over the same figure for "
                     f"the {FLAGS.matmul_size}^3 float32 matmul under XLA "
                     f"({cpu_rate / 1e9:.1f} GFLOP per CPU-second): CPU time, not wall time, so "
                     "that other jobs on a shared machine do not bias it") + ".",
                 "Programs: " + (
                     "the ones XLA gets off the CPU (kale_jax.xla_cpu.on_cpu's plain branch: "
                     "XLA's own convolution gradients, none of the XLA:CPU work-arounds of "
                     "kale_jax.networks.common), compiled here; the cpu rows count them too"
                     if FLAGS.roofline_programs == "default" else
                     "the CPU's own (with the XLA:CPU work-arounds), for every device")
                 + "; the CPU efficiency divides the FLOPs of the CPU's own programs, which "
                 "ran, by their CPU time.",
                 "Networks: " + ", ".join(
                     f"{net} (energy {param_bytes[net]['energy'] // 4 - 1:,} parameters and A, "
                     f"generator "
                     f"{param_bytes[net]['base'] // 4:,})" for net in param_bytes)
                 + f"; {FLAGS.image_size}x{FLAGS.image_size}x3 images, latent {FLAGS.latent}; "
                 "criterion 'kale' with the gradient penalty; the 'ula' step is one unadjusted "
                 "Langevin step of the latent posterior (one value-and-input-gradient of "
                 "E(B(z)))."]
        report = roofline.Report(costs=costs, devices=devices, efficiency=efficiency,
                                 param_bytes=param_bytes, step_batch=main_batch,
                                 dtype=dtype, recipe=recipe, command=command.strip(), notes=notes)
        with open(FLAGS.markdown, "w") as f:
            f.write(roofline.markdown(report))
    return rows


SECTIONS: Dict[str, Callable[[], List[Dict[str, Any]]]] = {
    "train": train_section, "sampler": sampler_section, "sampling": sampling_section,
    "roofline": roofline_section}


# --------------------------------------------------------------------------------------- table


def _fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def _table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'section':9s} {'net':7s} {'variant':7s} {'what':10s} {'ms':>9s} {'cpu ms':>9s} "
             f"{'GFLOP':>8s} "
             f"{'GFLOP/s':>8s} {'of mm':>6s} {'compile':>8s} {'RSS MB':>7s} {'load':>5s} "
             f"{'authors':>8s} {'target':>7s}"]
    for r in rows:
        if r["section"] == "machine":
            continue
        what = r.get("step") or r.get("kernel")
        ms = r.get("energy_step_ms") or r.get("generator_step_ms") or r.get("iteration_ms") \
            or r.get("ms_per_step") or r.get("step_ms")
        key = {"energy": "energy", "base": "base"}.get(what, what)
        equal_networks = r["section"] in ("train", "sampler") and r.get("variant") == "authors"
        authors = AUTHORS_MS.get((r["net"], key)) if equal_networks else None
        extra = f" {r['latents_per_s']:.1f} latents/s" if "latents_per_s" in r else ""
        lines.append(
            f"{r['section']:9s} {r['net']:7s} {r.get('variant') or '-':7s} {what:10s} "
            f"{_fmt(ms, '9.1f')} "
            f"{_fmt(r.get('cpu_ms'), '9.1f')} {_fmt(r.get('gflop'), '8.2f')} "
            f"{_fmt(r.get('gflop_per_s'), '8.1f')} {_fmt(r.get('matmul_fraction'), '6.3f')} "
            f"{_fmt(r.get('compile_s'), '8.2f')} {_fmt(r.get('peak_rss_mb'), '7.0f')} "
            f"{r['load_avg_1m']:5.2f} {_fmt(authors, '8.0f')} "
            f"{_fmt(authors and authors / TARGET_SPEEDUP, '7.0f')}{extra}")
    rate = machine_rate()
    lines.append(f"reference dense matmul ({FLAGS.matmul_size}^3 float32): XLA "
                 f"{rate['xla']:.1f} GFLOP/s (the 'of mm' reference), numpy {rate['numpy']:.1f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    extra = (["--xla_cpu_use_xnnpack=true"] if FLAGS.xnnpack else []) + FLAGS.xla_flags.split()
    if extra:  # before jax starts its backend (jax is imported lazily below)
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + extra).strip()
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices or os.cpu_count() or 1)
    rate = machine_rate()
    rows: List[Dict[str, Any]] = []
    _emit({"section": "machine", "xla_matmul_gflop_per_s": round(rate["xla"], 1),
           "numpy_matmul_gflop_per_s": round(rate["numpy"], 1), "matmul_size": FLAGS.matmul_size,
           "reference": "xla", "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "cpu_count": os.cpu_count(), "devices": [str(d) for d in _devices()],
           "load_avg_1m": round(os.getloadavg()[0], 2)}, rows)
    names = SECTION_NAMES if FLAGS.section == "all" else [FLAGS.section]
    for name in names:
        rows += [r for r in SECTIONS[name]()]
    print(_table(rows), file=sys.stdout, flush=True)


if __name__ == "__main__":
    from experiments import cli  # pylint: disable=g-import-not-at-top
    cli.run(main)
