r"""Benchmarks: python -m experiments.benchmark --section=sampler [--net=sngan|resnet|all]

Prints one JSON object per measurement on stdout, then a small human-readable table.

Section 'sampler': time per MCMC step of `kale_jax.hmc.sample` on the GEBM latent posterior
U(z) = |z|^2 / 2 + E(B(z)) for the SNGAN and SN-ResNet pairs at 32x32 (randomly initialised:
speed does not depend on training), and the same MALA and HMC steps through blackjax (the
optional `bench` extra) on the same potential. The whole multi-step sampler is jitted with the
network variables as arguments; ms_per_step is the median over --repeats timed runs of
(run time / --num_steps) after a compile run and one warm-up run; compile_s is the time of
`jit(...).lower(...).compile()`. Rows also record the 1-minute load average when they started,
since the 2-core machines may be shared.

More sections ('train', 'sampling') come later: add a function to SECTIONS.
"""
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

from absl import app, flags

flags.DEFINE_enum("section", "sampler", ["sampler"], "Which benchmark to run.")
flags.DEFINE_enum("net", "all", ["sngan", "resnet", "all"], "Generator/energy pair.")
flags.DEFINE_integer("batch", 64, "Chains (latents) per step.")
flags.DEFINE_integer("latent", 100, "Latent dimension.")
flags.DEFINE_integer("image_size", 32, "Image side.")
flags.DEFINE_integer("repeats", 3, "Timed runs per measurement (the median is reported).")
flags.DEFINE_integer("num_steps", 4, "MCMC steps per timed run.")
flags.DEFINE_list("kernels", ["ula", "mala", "hmc", "kla", "imh"], "Our kernels to time.")
flags.DEFINE_integer("num_leapfrog_steps", 2, "Leapfrog steps per HMC step (ours and blackjax).")
flags.DEFINE_bool("blackjax", True, "Also time blackjax MALA and HMC on the same potential.")
flags.DEFINE_list("unroll_sweep", [], "Extra ULA rows with these scan unroll values "
                  "(used to choose kale_jax.hmc.DEFAULT_UNROLL).")
flags.DEFINE_bool("hwio_ablation", False, "Extra ULA row with hwio_convolutions=False.")
flags.DEFINE_bool("xnnpack", True, "Run XLA:CPU convolutions through XNNPACK "
                  "(--xla_cpu_use_xnnpack=true; measured 1.7x faster on the SNGAN pair).")
FLAGS = flags.FLAGS

# The authors' PyTorch ULA step on the SNGAN pair, batch 64, on the same 2-core machines.
PYTORCH_ULA_SNGAN_MS = 794.0
NETS = {"sngan": ("sngan", "sngan"), "resnet": ("resnet", "resnet")}
STEP_SIZE = 1e-2


def _emit(row: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _time(fn: Callable, args: tuple, num_steps: int, repeats: int):
    """(median ms per step, compile seconds) of the jitted `fn(*args)`."""
    import jax  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up run
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        per_step.append((time.perf_counter() - start) / num_steps * 1e3)
    return statistics.median(per_step), compile_s


def _networks(net: str):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from kale_jax import networks  # pylint: disable=g-import-not-at-top
    gen_name, energy_name = NETS[net]
    generator = networks.get_generator(gen_name, image_size=FLAGS.image_size)
    energy = networks.get_energy(energy_name, image_size=FLAGS.image_size)
    gen_vars = networks.init_variables(generator, jax.random.key(0),
                                       jnp.zeros((1, FLAGS.latent)))
    energy_vars = networks.init_variables(
        energy, jax.random.key(1), jnp.zeros((1, FLAGS.image_size, FLAGS.image_size, 3)))
    return generator, energy, gen_vars, energy_vars


def _ours(generator, energy, kernel: str, **options) -> Callable:
    from kale_jax import hmc, latent  # pylint: disable=g-import-not-at-top
    if kernel == "hmc":
        options["num_leapfrog_steps"] = FLAGS.num_leapfrog_steps

    def run(gen_vars, energy_vars, key, z):
        potential = latent.potential(generator, energy, gen_vars, energy_vars)
        result = hmc.sample(key, potential, z, kernel=kernel, num_steps=FLAGS.num_steps,
                            step_size=STEP_SIZE, **options)
        return result.position, result.acceptance_rate

    return run


def _blackjax(generator, energy, kernel: str) -> Callable:
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

        states, accepted = jax.lax.scan(one_step, states, jax.random.split(key, FLAGS.num_steps))
        return states.position, accepted.mean(0)

    return run


def sampler_section() -> List[Dict[str, Any]]:
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import hmc  # pylint: disable=g-import-not-at-top
    rows: List[Dict[str, Any]] = []
    nets = list(NETS) if FLAGS.net == "all" else [FLAGS.net]
    for net in nets:
        generator, energy, gen_vars, energy_vars = _networks(net)
        z = jax.random.normal(jax.random.key(2), (FLAGS.batch, FLAGS.latent))
        args = (gen_vars, energy_vars, jax.random.key(3), z)
        runs = [(k, {}, _ours(generator, energy, k)) for k in FLAGS.kernels]
        if net == "sngan":
            runs += [("ula", {"unroll": int(u)}, _ours(generator, energy, "ula", unroll=int(u)))
                     for u in FLAGS.unroll_sweep]
            if FLAGS.hwio_ablation:
                runs.append(("ula", {"hwio_convolutions": False},
                             _ours(generator, energy, "ula", hwio_convolutions=False)))
        if FLAGS.blackjax:
            runs += [(f"blackjax_{k}", {}, _blackjax(generator, energy, k))
                     for k in ("mala", "hmc")]
        for kernel, extra, fn in runs:
            load = os.getloadavg()[0]
            ms, compile_s = _time(fn, args, FLAGS.num_steps, FLAGS.repeats)
            row = {"section": "sampler", "kernel": kernel, "net": net, "batch": FLAGS.batch,
                   "latent": FLAGS.latent, "image_size": FLAGS.image_size,
                   "ms_per_step": round(ms, 1), "compile_s": round(compile_s, 2),
                   "num_steps": FLAGS.num_steps, "repeats": FLAGS.repeats,
                   "unroll": extra.get("unroll", hmc.DEFAULT_UNROLL),
                   "hwio_convolutions": extra.get("hwio_convolutions",
                                                  not kernel.startswith("blackjax")),
                   "xnnpack": FLAGS.xnnpack,
                   "load_avg_1m": round(load, 2)}
            if kernel.endswith("hmc"):
                row["num_leapfrog_steps"] = FLAGS.num_leapfrog_steps
            _emit(row, rows)
    return rows


SECTIONS: Dict[str, Callable[[], List[Dict[str, Any]]]] = {"sampler": sampler_section}


def _table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'net':8s} {'kernel':14s} {'options':58s} {'ms/step':>9s} {'compile s':>9s} "
             f"{'load':>5s}"]
    for r in rows:
        options = ", ".join(f"{k}={r[k]}" for k in ("unroll", "hwio_convolutions",
                                                     "num_leapfrog_steps") if k in r)
        lines.append(f"{r['net']:8s} {r['kernel']:14s} {options:58s} {r['ms_per_step']:9.1f} "
                     f"{r['compile_s']:9.2f} {r['load_avg_1m']:5.2f}")
    ula = [r for r in rows if r["net"] == "sngan" and r["kernel"] == "ula"]  # default options first
    if ula:
        lines.append(f"ULA on SNGAN vs the authors' PyTorch ({PYTORCH_ULA_SNGAN_MS:.0f} ms/step): "
                     f"{PYTORCH_ULA_SNGAN_MS / ula[0]['ms_per_step']:.2f}x")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.xnnpack:  # before jax starts its backend (jax is imported lazily below)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_use_xnnpack=true").strip()
    rows = SECTIONS[FLAGS.section]()
    print(_table(rows), file=sys.stdout, flush=True)


if __name__ == "__main__":
    app.run(main)
