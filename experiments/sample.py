r"""Samples a trained GEBM and measures it along the MCMC chain.

    python -m experiments.sample --config=configs/digits.py --workdir=workdirs/digits \
        [--config.sampler.kernel=kla --config.sampler.num_steps=500 --config.sample.num_samples=...]

Loads the latest checkpoint in WORKDIR (or --step), draws config.sample.num_samples latent chains
with config.sampler (kale_jax.sampling: chunks of config.sample.chunk_size, sharded over all local
devices), starting from the prior, so record 0 is the base alone and the last record the GEBM.
Every config.sample.record_every MCMC steps it records:

  energy, acceptance      mean E(B(z)) over chains; fraction of accepted proposals in the block
  mmd                     unbiased MMD^2 against the held-out split (embedded sets: toys, digits,
                          shapes; Gaussian-mixture kernel, bandwidths = held-out median x
                          (0.5, 1, 2))
  fid_train, fid_test     FID against the train / held-out split's statistics (cached per dataset
                          and split), and kid_test (+ kid_test_se): needs Inception weights at
                          config.sample.inception_path; without them a line says how to get them
Once: kale_train / kale_heldout, the KALE estimate -mean E(x) - log mean exp(-E(B(z))) on
config.sample.num_kale_examples train / held-out examples against all base samples.

Writes to --outdir (default WORKDIR/sample/<kernel>): results.json, metrics.png (each metric
against MCMC steps), chains.gif (config.sample.num_gif_chains chains over the records), and
base.png / gebm.png image grids (images) or scatter.png (2-D / 3-D data).
"""
import json
import math
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/sample/<kernel>).")
flags.DEFINE_integer("step", None, "Checkpoint step to sample (default: the latest).")
config_flags.DEFINE_config_file("config", None, "The training config (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS

SAMPLE_STREAM = 0x5A4D  # fold_in of the seed's key for sampling (independent of training draws)
# Config entries that fix the networks' structure: must match the checkpoint's config.
_SAMPLER_OPTIONS = ("num_leapfrog_steps", "friction", "num_adaptation_steps", "target_acceptance",
                    "step_size_schedule", "decay_factor", "decay_every", "unroll")


def validate_sample_config(config) -> None:
    """ConfigError (one line) for bad config.sample / config.sampler values, before compiling."""
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    s = config.sample
    for key in ("num_samples", "chunk_size", "record_every", "num_grid", "num_gif_chains",
                "num_data_examples", "num_kale_examples", "mmd_num_samples",
                "inception_batch_size", "kid_subsets", "kid_subset_size"):
        value = s.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.sample.{key} must be an integer >= 1, got {value!r}")
    num_steps = config.sampler.num_steps
    if num_steps and num_steps % s.record_every:
        raise ConfigError(f"config.sample.record_every={s.record_every} must divide "
                          f"config.sampler.num_steps={num_steps}; e.g. "
                          f"--config.sample.record_every={math.gcd(num_steps, s.record_every)}")
    from kale_jax import hmc  # pylint: disable=g-import-not-at-top
    adaptation = config.sampler.get("num_adaptation_steps")
    if adaptation and config.sampler.kernel not in hmc.ADAPTIVE_KERNELS:
        raise ConfigError(f"config.sampler.num_adaptation_steps={adaptation} but kernel "
                          f"{config.sampler.kernel!r} has no step-size adaptation (only "
                          f"{hmc.ADAPTIVE_KERNELS}); add --config.sampler.num_adaptation_steps=0")
    try:
        _sampler_spec(config).validate()
    except ValueError as error:
        raise ConfigError(f"config.sampler: {error}") from None


def _sampler_spec(config):
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    sampler = config.sampler
    spec = sampling.SamplerSpec(
        kernel=sampler.kernel, num_steps=sampler.num_steps,
        step_size=None if sampler.get("step_size") is None else float(sampler.step_size),
        beta=float(sampler.beta),
        record_every=min(config.sample.record_every, sampler.num_steps) or None)
    return spec.with_options(**{k: sampler.get(k) for k in _SAMPLER_OPTIONS})


def _restore(config, workdir, step):
    """(state, step, Trainer) from WORKDIR/checkpoints, with one-line errors."""
    import jax  # pylint: disable=g-import-not-at-top
    from kale_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import CheckpointError  # pylint: disable=g-import-not-at-top
    from kale_jax.train import loop, validate  # pylint: disable=g-import-not-at-top
    directory = os.path.join(workdir, loop.CHECKPOINT_DIR)
    fix = (f"train first: python -m experiments.train --config=... --workdir={workdir}")
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoints in {directory}; {fix}")
    checkpoints = checkpoint_lib.Checkpoints(directory)
    try:
        steps = checkpoints.all_steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {directory}; {fix}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"--step={step} is not in {directory} (saved steps: {steps})")
        # Unlike resuming training, the seed may differ: it only picks the chains.
        validate.against_checkpoint(config, checkpoints.step_metadata(step).get("config"),
                                    directory=directory, keys=validate.SAMPLE_KEYS)
        trainer = loop.Trainer(config, devices=jax.local_devices()[:1])
        try:
            state = checkpoints.restore(step, target=trainer.abstract_state())
        except Exception as error:  # orbax raises many types for mismatched trees
            raise CheckpointError(f"cannot restore step {step} from {directory} with this config "
                                  f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
                                  ) from None
    finally:
        checkpoints.close()
    return state, step, trainer


def _batched(fn, x, batch):
    """fn over x in fixed-size padded batches (one compilation); numpy result."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    out = []
    for start in range(0, x.shape[0], batch):
        part = x[start:start + batch]
        pad = batch - part.shape[0]
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        out.append(np.asarray(fn(part))[:batch - pad])
    return np.concatenate(out)


def _append(kept, records, limit):
    """Concatenates records (R, n, ...) onto kept along chains, up to `limit` chains."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    if kept is None:
        return records[:, :limit]
    if kept.shape[1] >= limit:
        return kept
    return np.concatenate([kept, records[:, :limit - kept.shape[1]]], axis=1)


def run(config, workdir, outdir=None, step=None):
    """Samples, measures and writes pictures; returns the results dict (also results.json)."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from kale_jax import data, kale, latent, metrics, sampling  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    from kale_jax.metrics import fid as fid_lib  # pylint: disable=g-import-not-at-top
    from kale_jax.metrics import inception, statistics  # pylint: disable=g-import-not-at-top
    from experiments import sample_outputs  # pylint: disable=g-import-not-at-top

    started = time.monotonic()
    validate_sample_config(config)
    s = config.sample
    spec = _sampler_spec(config)
    devices = jax.local_devices()
    if s.chunk_size % len(devices):
        raise ConfigError(f"config.sample.chunk_size={s.chunk_size} must be a multiple of the "
                          f"{len(devices)} local devices")
    info = data.get_info(config.data)
    state, step, trainer = _restore(config, workdir, step)
    outdir = outdir or os.path.join(workdir, "sample", spec.kernel)
    os.makedirs(outdir, exist_ok=True)

    # Feature extractor for FID/KID, if weights are there (checked before any long compile).
    extractor = None
    inception_path = s.inception_path
    if info.kind == "image" and inception_path:
        if os.path.exists(inception_path):
            variables = inception.load_variables(inception_path)
            extractor = inception.FeatureExtractor(
                variables, batch_size=s.inception_batch_size,
                name=os.path.splitext(os.path.basename(inception_path))[0])
        else:
            print(f"FID/KID disabled: no Inception weights at {inception_path}; to enable them, "
                  "convert pytorch-fid's weights with python -m experiments.convert_inception "
                  f"--src=pt_inception-2015-12-05-6726825d.pth --out={inception_path} "
                  "(third_party/inception/README.md)", flush=True)
    use_mmd = s.mmd if s.mmd is not None else info.name in data.EMBEDDED_DATASETS

    # Data: held-out reference for MMD, examples for KALE, cached feature statistics for FID.
    def split_size(split, wanted):
        if info.name == "digits":
            from kale_jax.data import digits  # pylint: disable=g-import-not-at-top
            return min(wanted, digits.load(split, digits.image_size(config.data)).shape[0])
        return wanted

    num_kale = {split: split_size(split, s.num_kale_examples) for split in ("train", "test")}
    kale_data = {split: data.eval_examples(config.data, split=split, num_examples=n,
                                           seed=config.seed) for split, n in num_kale.items()}
    if use_mmd:
        reference = data.eval_examples(config.data, split="test",
                                       num_examples=split_size("test", s.mmd_num_samples),
                                       seed=config.seed)
        half = max(reference.shape[0] // 2, 1)
        bandwidths = np.asarray(metrics.median_bandwidth(reference[:half], reference[half:])) * \
            np.asarray(metrics.DEFAULT_BANDWIDTH_SCALES, np.float32)
    data_stats = {}
    if extractor is not None:
        keep = s.kid_subset_size * 4
        for split in ("train", "test"):
            data_stats[split] = statistics.data_statistics(
                config.data, split, split_size(split, s.num_data_examples), extractor,
                extractor.name, cache_dir=s.stats_dir, keep=keep, seed=config.seed)

    # Sampling: chunks of chains, consumed one by one.
    model = sampling.Model(trainer.spec.generator, trainer.spec.energy, trainer.spec.latent_dim,
                           trainer.spec.energy_floor)
    sampler = sampling.Sampler(model, spec, chunk_size=s.chunk_size, devices=devices)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), SAMPLE_STREAM)
    g_vars, e_vars = state.generator_variables(), state.energy_variables()
    steps = spec.record_steps
    num_records = len(steps)
    energy_sum = np.zeros(num_records)
    acceptance_sum = np.zeros(num_records)
    base_energies, nonfinite, step_sizes = [], 0, []
    mmd_samples = [[] for _ in steps]
    running = [statistics.RunningStatistics(keep=s.kid_subset_size * 4) for _ in steps]
    grid = gif = None
    sampling_seconds = 0.0
    chunk_started = time.monotonic()
    for chunk in sampler.chunks(key, g_vars, e_vars, s.num_samples):
        sampling_seconds += time.monotonic() - chunk_started
        energy_sum += chunk.energy.sum(axis=1)
        acceptance_sum += np.nan_to_num(chunk.acceptance).sum(axis=1)
        base_energies.append(chunk.energy[0])
        nonfinite += int(chunk.num_nonfinite.sum())
        step_sizes.append(chunk.step_size)
        # The first num_grid / num_gif_chains chains, gathered over chunks.
        grid = _append(grid, chunk.samples[[0, -1]], s.num_grid)
        gif = _append(gif, chunk.samples, s.num_gif_chains)
        for r in range(num_records):
            if use_mmd:
                have = sum(x.shape[0] for x in mmd_samples[r])
                if have < s.mmd_num_samples:
                    mmd_samples[r].append(chunk.samples[r, :s.mmd_num_samples - have])
            if extractor is not None:
                running[r].update(extractor(chunk.samples[r]))
        logging.info("sampled chains %d-%d of %d", chunk.start,
                     chunk.start + chunk.samples.shape[1] - 1, s.num_samples)
        chunk_started = time.monotonic()

    n = s.num_samples
    curves = {"energy": (energy_sum / n).tolist()}
    acceptance = (acceptance_sum / n).tolist()
    curves["acceptance"] = [float("nan")] + acceptance[1:]
    if use_mmd:
        curves["mmd"] = [float(metrics.mmd2(reference, np.concatenate(x), bandwidths=bandwidths))
                         for x in mmd_samples]
    if extractor is not None:
        generated = [r.result() for r in running]
        for split in ("train", "test"):
            curves[f"fid_{split}"] = [fid_lib.frechet_distance(g.mu, g.sigma, data_stats[split].mu,
                                                               data_stats[split].sigma)
                                      for g in generated]
        kids = [fid_lib.kid(g.features, data_stats["test"].features,
                            num_subsets=s.kid_subsets, subset_size=s.kid_subset_size,
                            seed=config.seed) for g in generated]
        curves["kid_test"] = [k.mean for k in kids]
        curves["kid_test_se"] = [k.standard_error for k in kids]

    # KALE on train and held-out data against all base samples (record 0 of every chain).
    energy = jax.jit(latent.energy_fn(trainer.spec.energy, e_vars, trainer.spec.energy_floor))
    e_fake = np.concatenate(base_energies)
    results_kale = {}
    for split, name in (("train", "kale_train"), ("test", "kale_heldout")):
        e_data = _batched(energy, kale_data[split], s.chunk_size)
        results_kale[name] = float(kale.estimate(e_data, e_fake))

    results = {
        "workdir": os.path.abspath(workdir), "checkpoint_step": int(step),
        "dataset": info.name, "kernel": spec.kernel, "num_steps": spec.num_steps,
        "step_size": spec.step_size, "beta": spec.beta, "options": dict(spec.options),
        "num_samples": n, "chunk_size": s.chunk_size, "num_devices": len(devices),
        "record_steps": steps.tolist(), "metrics": curves,
        "base": {k: v[0] for k, v in curves.items()},
        "gebm": {k: v[-1] for k, v in curves.items()},
        **results_kale,
        "acceptance_rate": float(np.mean(acceptance[1:])) if num_records > 1 else None,
        "num_nonfinite": nonfinite, "fid_enabled": extractor is not None,
        "final_step_size": float(np.mean(np.concatenate(step_sizes))),
        "sampling_seconds": sampling_seconds,
        "latents_per_second": n / sampling_seconds if sampling_seconds else None,
        "seconds": time.monotonic() - started,
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(sample_outputs.json_safe(results), f, indent=2)
    title = f"{info.name}, {spec.kernel}, checkpoint {step}"
    sample_outputs.write_pictures(outdir, info, grid, gif, steps, curves, title,
                                  reference if use_mmd else None)
    logging.info("results: %s", json.dumps(sample_outputs.json_safe(
        {"base": results["base"], "gebm": results["gebm"], **results_kale})))
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax_logs()
    cli.log_cpu_devices_hint()
    from experiments import sample_outputs  # pylint: disable=g-import-not-at-top
    results = run(FLAGS.config, FLAGS.workdir, FLAGS.outdir, FLAGS.step)
    summary = {k: results[k] for k in ("kale_train", "kale_heldout", "acceptance_rate")}
    print(json.dumps(sample_outputs.json_safe(
        {"base": results["base"], "gebm": results["gebm"], **summary})), flush=True)


if __name__ == "__main__":
    cli.run(main)
