r"""Samples a trained GEBM and measures it along the MCMC chain, at one or several temperatures.

    python -m experiments.sample --workdir=workdirs/digits [--config=configs/digits.py] \
        [--preset=authors_kla] [--config.sample.betas=0.01,1,100] \
        [--config.sampler.kernel=kla --config.sampler.num_steps=500 --config.sample.num_samples=...]

The config defaults to the training run's WORKDIR/config.json (experiments/workdir_config.py),
so the training overrides need not be typed again; --config=FILE replaces it, and --config.*
overrides apply on top of either. Installed, the binary is the console script `kale-sample`.
Progress: one updating line with rate and ETA on a terminal (tqdm), a log line per chunk
otherwise.

Loads the latest checkpoint in WORKDIR (or --step), draws config.sample.num_samples latent chains
with config.sampler (kale_jax.sampling: chunks of config.sample.chunk_size, sharded over all local
devices), starting from the prior, so record 0 is the base alone and the last record the GEBM.
--preset=NAME first sets config.sampler to kale_jax.sampling.PRESETS[NAME] ('authors_kla',
'authors_langevin', 'adapted_mala'); --config.sampler.* flags given on the command line win over
the preset.

Temperatures: the chains target nu(z) ∝ N(z; 0, I) exp(-beta E(B(z))) for every beta of
config.sample.betas (default: (config.sampler.beta,)), each beta with the SAME chain keys and
starts, so the base samples are shared and the betas' differences are paired.
Every config.sample.record_every MCMC steps, for every beta, it records:

  energy, acceptance      mean E(B(z)) over chains; fraction of accepted proposals in the block
  mmd                     unbiased MMD^2 against the held-out TEST reference (embedded sets: toys,
                          digits, shapes; Gaussian-mixture kernel, bandwidths = validation-reference
                          median x (0.5, 1, 2))
  fid_train, fid_test     FID against the train / held-out split's statistics (cached per dataset
                          and split), and kid_test (+ kid_test_se): needs Inception weights at
                          config.sample.inception_path; without them a line says how to get them
  <exact metrics>         the dataset's exact metrics (kale_jax.data.exact_metrics; ring / grid:
                          share_within_3std, modes_covered, mode_kl)
MMD and the exact metrics use the first config.sample.mmd_num_samples chains of each record.

Choosing beta on validation data, reporting on test data: with several betas, beta is chosen by
config.sample.select_by at the last record (default 'mmd' when MMD is on, else 'fid' with
Inception weights, else the set's first exact metric; the direction from kale_jax.data.metric_goal)
on data disjoint from the reported test reference (kale_jax.data.validation_and_test): sampled
sets (sphere3d, ring, grid) draw a validation reference from its own random stream; digits (and
other sets without a separate validation split) split the test split in two halves, the first
for validation, the second for test; tabular sets use their 'valid' split. 'fid' chooses on
fid_train (FID against training-split statistics: data disjoint from the test split, and no
extra statistics to compute) and reports fid_test. Exact metrics need no reference: they are
computed on the same samples for choosing and reporting (so the chosen beta's value is slightly
optimistic, by about the spread of the metric's Monte-Carlo error over the betas).

Once: kale_train / kale_heldout, the KALE estimate -mean E(x) - log mean exp(-E(B(z))) on
config.sample.num_kale_examples train / held-out examples against all base samples, and
ess_fraction, Kish's effective sample size of the weights exp(-E) over the base samples divided
by their number (1: the energy is flat on the base; 1/n: one sample carries all the weight).

Writes to --outdir (default WORKDIR/sample/<preset> with --preset, else WORKDIR/sample/<kernel>):
  results.json   the top-level keys describe the FIRST beta, as in a one-beta run: workdir,
                 checkpoint_step, dataset, kernel, num_steps, step_size, beta, options,
                 num_samples, record_steps, metrics (every curve above), base / gebm (the curves'
                 first / last values), kale_train, kale_heldout, acceptance_rate, num_nonfinite,
                 final_step_size, fid_enabled, timings; and for all betas:
                 mmd_noise (MMD^2's standard deviation between two true samples of this size,
                 kale_jax.metrics.mmd2_noise; None without MMD),
                 betas, chosen_beta, ess_fraction, select_by, selection = {metric, goal,
                 reference, validation: {"<beta>": value}, test: {"<beta>": value}, chosen_beta},
                 by_beta = {"<beta>": {beta, metrics: {curves}, final: {last values},
                 validation: {mmd (validation reference), fid_train, exact metrics},
                 acceptance_rate, num_nonfinite, final_step_size, ess_fraction (of exp(-beta E)
                 over the base samples)}}; "<beta>" is repr(float(beta)), e.g. "100.0".
  samples.npz    base (n, *data_shape) float32 (record 0 of the first n chains, n =
                 min(num_samples, config.sample.num_saved)), gebm (n, *data_shape) at the chosen
                 beta, and with several betas betas (B,) and gebm_per_beta (B, n, *data_shape);
                 written atomically, loadable with np.load(path, allow_pickle=False)
  metrics.png (each metric against MCMC steps, y-labelled, error bars from <name>_se, MMD's
  noise level as a grey band), chains.gif (config.sample.num_gif_chains chains over the records;
  2-D / 3-D data: x1-x2 with fading trails, 480 px; images: a grid of >= 400 px),
  base.png / gebm.png image grids (images) or scatter.png (2-D / 3-D data as coordinate-pair
  projections, MMD^2 and noise in each title) and chains.png (every chain's path):
  all at the chosen beta (the only one in a one-beta run)
  beta_sweep.png (several betas): per metric, the curves of every beta against MCMC steps, and
                 the final value against beta (log axis), test and validation, chosen beta marked
"""
import json
import math
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

FLAGS = flags.FLAGS

SAMPLE_STREAM = 0x5A4D  # fold_in of the seed's key for sampling (independent of training draws)
# config.sample keys that must be integers >= 1.
_POSITIVE_INT_KEYS = ("num_samples", "chunk_size", "record_every", "num_grid", "num_gif_chains",
                      "num_data_examples", "num_kale_examples", "mmd_num_samples",
                      "inception_batch_size", "kid_subsets", "kid_subset_size", "num_saved")


def _define_flags() -> None:
    """Defined only when run as a binary: tests import this module beside other binaries' flags."""
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/sample/<preset> or "
                        "WORKDIR/sample/<kernel>).")
    flags.DEFINE_integer("step", None, "Checkpoint step to sample (default: the latest).")
    flags.DEFINE_string("preset", None, "Sampler preset (kale_jax.sampling.PRESETS) applied to "
                        "config.sampler; explicit --config.sampler.* flags win over it.")
    config_flags.DEFINE_config_file("config", None, "The training config (configs/*.py); "
                                    "default: WORKDIR/config.json, the training run's config.",
                                    lock_config=True)
    flags.mark_flags_as_required(["workdir"])


def validate_sample_config(config) -> None:
    """ConfigError (one line) for bad config.sample / config.sampler values, before compiling."""
    from kale_jax import checks  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    s = config.sample
    for key in _POSITIVE_INT_KEYS:
        checks.check_int(s.get(key), f"config.sample.{key}", minimum=1)
    num_steps = config.sampler.num_steps
    if num_steps and num_steps % s.record_every:
        raise ConfigError(f"config.sample.record_every={s.record_every} must divide "
                          f"config.sampler.num_steps={num_steps}; e.g. "
                          f"--config.sample.record_every={math.gcd(num_steps, s.record_every)}")
    _sampler_spec(config)
    betas(config)
    select_by = s.get("select_by")
    if select_by is not None and not isinstance(select_by, str):
        raise ConfigError(f"config.sample.select_by must be None or a metric name, got "
                          f"{select_by!r}")


def betas(config) -> tuple:
    """config.sample.betas as floats (default (config.sampler.beta,)); ConfigError if bad."""
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    value = config.sample.get("betas")
    if value is None:
        return (float(config.sampler.beta),)
    fix = "e.g. --config.sample.betas=0.01,1,100"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not len(value):
        raise ConfigError(f"config.sample.betas must be a non-empty tuple of numbers > 0, got "
                          f"{value!r}; {fix}")
    from kale_jax import checks  # pylint: disable=g-import-not-at-top
    out = [checks.check_positive(beta, f"config.sample.betas[{i}]", fix=fix)
           for i, beta in enumerate(value)]
    if len(set(out)) != len(out):
        raise ConfigError(f"config.sample.betas must not repeat a value, got {tuple(value)!r}")
    return tuple(out)


def beta_key(beta: float) -> str:
    """The key of a beta in results.json's by_beta / selection: repr(float(beta)), e.g. '100.0'."""
    return repr(float(beta))


def apply_preset(config, name: str, overrides=()) -> None:
    """Sets config.sampler to kale_jax.sampling.PRESETS[name], except the keys in `overrides`.

    Args:
      config: the full config (config.sampler is changed in place; a locked config is fine).
      name: a preset name.
      overrides: flat names of explicitly given config flags ('sampler.num_steps', ...; from
        ml_collections.config_flags.get_override_values): those keep their value.
    Raises:
      ConfigError: unknown name, or a preset key the config lacks.
    """
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    if name not in sampling.PRESETS:
        raise ConfigError(f"--preset={name!r} is not a sampler preset; use one of "
                          f"{tuple(sampling.PRESETS)} (kale_jax.sampling.PRESETS)")
    for key, value in sampling.PRESETS[name].items():
        if f"sampler.{key}" in overrides:
            continue
        if key not in config.sampler:
            if value is None:
                continue
            raise ConfigError(f"--preset={name!r} sets config.sampler.{key}, which this config "
                              "lacks; base the config on configs/default.py")
        config.sampler[key] = value


def _selection(config, use_mmd: bool, fid_on: bool):
    """(select_by, goal) for choosing beta: config.sample.select_by or its default; ConfigError
    if the metric is not available for this run. (None, None) when no metric is available."""
    from kale_jax import data  # pylint: disable=g-import-not-at-top
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    exact = tuple(data.metric_goals(config.data))
    allowed = (("mmd",) if use_mmd else ()) + (("fid",) if fid_on else ()) + exact
    select_by = config.sample.get("select_by")
    if select_by is None:
        if not allowed:
            return None, None
        select_by = allowed[0]
    elif select_by not in allowed:
        hint = ""
        if select_by in ("energy", "acceptance", "acceptance_rate"):
            hint = "; energy and acceptance rate do not measure sample quality"
        elif select_by == "mmd":
            hint = "; MMD is off: add --config.sample.mmd=True"
        elif select_by == "fid":
            hint = (f"; FID needs image data and Inception weights at "
                    f"{config.sample.inception_path} (third_party/inception/README.md)")
        raise ConfigError(f"config.sample.select_by={select_by!r} is not available for "
                          f"data.name={config.data.name!r}; use one of {allowed}{hint}")
    return select_by, data.metric_goal(config.data, select_by)


def _sampler_spec(config):
    """The validated SamplerSpec of config.sampler, recording every config.sample.record_every
    steps (ConfigError if bad)."""
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    num_steps = config.sampler.num_steps
    record_every = (min(config.sample.record_every, num_steps) or None
                    if isinstance(num_steps, int) else None)
    return sampling.from_config(config.sampler, record_every=record_every)


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


def _sample_beta(sampler, key, g_vars, e_vars, beta, s, *, keep_samples, extractor, num_saved,
                 save_base):
    """Runs every chain at `beta` and accumulates what run() needs (host-side, numpy): sums for
    the mean curves, the first chains' samples for pictures, MMD / exact metrics and
    samples.npz (the base samples only if `save_base`), streamed FID statistics."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    from kale_jax.metrics import statistics  # pylint: disable=g-import-not-at-top
    num_records = len(sampler.spec.record_steps)
    out = dict(energy_sum=np.zeros(num_records), acceptance_sum=np.zeros(num_records),
               base_energies=[], nonfinite=0, step_sizes=[], grid=None, gif=None,
               saved_base=[], saved_gebm=[],
               kept=[[] for _ in range(num_records)], seconds=0.0,
               running=[statistics.RunningStatistics(keep=s.kid_subset_size * 4)
                        for _ in range(num_records)] if extractor is not None else None)
    from experiments import progress  # pylint: disable=g-import-not-at-top
    shown = progress.Progress(s.num_samples, f"beta {beta:g}", unit="samples")
    chunk_started = time.monotonic()
    for chunk in sampler.chunks(key, g_vars, e_vars, s.num_samples, beta=beta):
        out["seconds"] += time.monotonic() - chunk_started
        out["energy_sum"] += chunk.energy.sum(axis=1)
        out["acceptance_sum"] += np.nan_to_num(chunk.acceptance).sum(axis=1)
        out["base_energies"].append(chunk.energy[0])
        out["nonfinite"] += int(chunk.num_nonfinite.sum())
        out["step_sizes"].append(chunk.step_size)
        # The first num_grid / num_gif_chains / num_saved chains, gathered over chunks.
        out["grid"] = _append(out["grid"], chunk.samples[[0, -1]], s.num_grid)
        out["gif"] = _append(out["gif"], chunk.samples, s.num_gif_chains)
        first = max(0, min(num_saved - chunk.start, chunk.samples.shape[1]))
        if first:
            out["saved_gebm"].append(chunk.samples[-1, :first])
            if save_base:
                out["saved_base"].append(chunk.samples[0, :first])
        for r in range(num_records):
            if keep_samples:
                have = sum(x.shape[0] for x in out["kept"][r])
                if have < s.mmd_num_samples:
                    out["kept"][r].append(chunk.samples[r, :s.mmd_num_samples - have])
            if extractor is not None:
                out["running"][r].update(extractor(chunk.samples[r]))
        shown.update(chunk.samples.shape[1])
        chunk_started = time.monotonic()
    shown.close()
    out["kept"] = [np.concatenate(x) for x in out["kept"]] if keep_samples else None
    out["saved_gebm"] = np.concatenate(out["saved_gebm"]).astype(np.float32)
    out["saved_base"] = (np.concatenate(out["saved_base"]).astype(np.float32) if save_base
                         else None)
    return out


def _write_npz(path, arrays):
    """np.savez to path atomically (a temporary file in the same directory, then a rename)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _select_beta(sweep, by_beta, select_by, goal):
    """(index of the chosen beta, the results' `selection` entry or None): the best validation
    value of `select_by` over the betas (the first beta when none is finite or no metric)."""
    from kale_jax import sampling  # pylint: disable=g-import-not-at-top
    if select_by is None:
        return 0, None
    keys = [beta_key(b) for b in sweep]
    validation_name = {"mmd": "mmd", "fid": "fid_train"}.get(select_by, select_by)
    test_name = {"mmd": "mmd", "fid": "fid_test"}.get(select_by, select_by)
    values = [by_beta[k]["validation"].get(validation_name) for k in keys]
    index = sampling.choose_beta(sweep, values, goal)
    if index is None:
        logging.warning("no finite validation %s at any beta; reporting the first beta",
                        select_by)
    chosen = 0 if index is None else index
    reference_name = {"mmd": "validation reference (kale_jax.data.validation_and_test)",
                      "fid": "fid_train (training-split statistics)"}.get(
                          select_by, "the samples (exact metric, no reference)")
    return chosen, {"metric": select_by, "goal": goal, "reference": reference_name,
                    "validation": dict(zip(keys, values)),
                    "test": {k: by_beta[k]["final"].get(test_name) for k in keys},
                    "chosen_beta": sweep[chosen], "fallback": index is None}


def run(config, workdir, outdir=None, step=None):
    """Samples every beta, measures, chooses beta and writes pictures; returns the results dict
    (also results.json; layout in the module docstring)."""
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
    sweep = betas(config)
    devices = jax.local_devices()
    if s.chunk_size % len(devices):
        raise ConfigError(f"config.sample.chunk_size={s.chunk_size} must be a multiple of the "
                          f"{len(devices)} local devices")
    info = data.get_info(config.data)
    use_mmd = s.mmd if s.mmd is not None else info.name in data.EMBEDDED_DATASETS
    inception_path = s.inception_path
    fid_on = bool(info.kind == "image" and inception_path and os.path.exists(inception_path))
    select_by, goal = _selection(config, use_mmd, fid_on)
    from kale_jax import gebm_model  # pylint: disable=g-import-not-at-top
    state, step, trainer = gebm_model.restore(config, workdir, step,
                                              config_source="the sampling config")
    outdir = outdir or os.path.join(workdir, "sample", spec.kernel)
    os.makedirs(outdir, exist_ok=True)

    # Feature extractor for FID/KID, if weights are there (checked before any long compile).
    extractor = None
    if fid_on:
        variables = inception.load_variables(inception_path)
        extractor = inception.FeatureExtractor(
            variables, batch_size=s.inception_batch_size,
            name=os.path.splitext(os.path.basename(inception_path))[0])
    elif info.kind == "image" and inception_path:
        print(f"FID/KID disabled: no Inception weights at {inception_path}; to enable them, "
              "convert pytorch-fid's weights with python -m experiments.convert_inception "
              f"--src=pt_inception-2015-12-05-6726825d.pth --out={inception_path} "
              "(third_party/inception/README.md)", flush=True)
    has_exact = bool(data.metric_goals(config.data))

    # Data: validation / test references for MMD, examples for KALE, feature statistics for FID.
    def split_size(split, wanted):
        if info.name == "digits":
            from kale_jax.data import digits  # pylint: disable=g-import-not-at-top
            return min(wanted, digits.load(split, digits.image_size(config.data)).shape[0])
        return wanted

    num_kale = {split: split_size(split, s.num_kale_examples) for split in ("train", "test")}
    kale_data = {split: data.eval_examples(config.data, split=split, num_examples=n,
                                           seed=config.seed) for split, n in num_kale.items()}
    reference = validation_reference = None
    if use_mmd:
        validation_reference, reference = data.validation_and_test(
            config.data, num_examples=s.mmd_num_samples, seed=config.seed)
        # One kernel for validation and test, from validation data alone.
        bandwidths = metrics.reference_bandwidths(validation_reference)
    mmd_noise = None
    if use_mmd and reference.shape[0] >= 4:  # MMD^2's spread between two true samples
        mmd_noise = metrics.mmd2_noise(reference, bandwidths=bandwidths, num_samples=min(
            reference.shape[0], s.num_samples, s.mmd_num_samples), seed=config.seed)
    data_stats = {}
    if extractor is not None:
        keep = s.kid_subset_size * 4
        for split in ("train", "test"):
            data_stats[split] = statistics.data_statistics(
                config.data, split, split_size(split, s.num_data_examples), extractor,
                extractor.name, cache_dir=s.stats_dir, keep=keep, seed=config.seed)

    # Sampling: every beta runs the same chains (same key), chunk by chunk.
    model = sampling.Model(trainer.spec.generator, trainer.spec.energy, trainer.spec.latent_dim,
                           trainer.spec.energy_floor)
    sampler = sampling.Sampler(model, spec, chunk_size=s.chunk_size, devices=devices)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), SAMPLE_STREAM)
    g_vars, e_vars = state.generator_variables(), state.energy_variables()
    steps = spec.record_steps
    num_records = len(steps)
    n = s.num_samples
    num_saved = min(n, s.num_saved)
    runs, by_beta = [], {}
    for beta in sweep:
        r = _sample_beta(sampler, key, g_vars, e_vars, beta, s, keep_samples=use_mmd or has_exact,
                         extractor=extractor, num_saved=num_saved, save_base=not runs)
        runs.append(r)
        curves = {"energy": (r["energy_sum"] / n).tolist()}
        acceptance = (r["acceptance_sum"] / n).tolist()
        curves["acceptance"] = [float("nan")] + acceptance[1:]
        validation = {}
        if use_mmd:
            curves["mmd"] = [float(metrics.mmd2(reference, x, bandwidths=bandwidths))
                             for x in r["kept"]]
            validation["mmd"] = float(metrics.mmd2(validation_reference, r["kept"][-1],
                                                   bandwidths=bandwidths))
        if extractor is not None:
            generated = [x.result() for x in r["running"]]
            for split in ("train", "test"):
                curves[f"fid_{split}"] = [
                    fid_lib.frechet_distance(g.mu, g.sigma, data_stats[split].mu,
                                             data_stats[split].sigma) for g in generated]
            kids = [fid_lib.kid(g.features, data_stats["test"].features,
                                num_subsets=s.kid_subsets, subset_size=s.kid_subset_size,
                                seed=config.seed) for g in generated]
            curves["kid_test"] = [k.mean for k in kids]
            curves["kid_test_se"] = [k.standard_error for k in kids]
            validation["fid_train"] = curves["fid_train"][-1]
        if has_exact:
            per_record = [data.exact_metrics(config.data, x) for x in r["kept"]]
            for name in per_record[0]:
                curves[name] = [m[name] for m in per_record]
                validation[name] = curves[name][-1]
        r["kept"] = r["running"] = None  # measured: free the memory before the next beta
        e_base = np.concatenate(r["base_energies"])
        by_beta[beta_key(beta)] = {
            "beta": beta, "metrics": curves, "final": {k: v[-1] for k, v in curves.items()},
            "validation": validation,
            "acceptance_rate": float(np.mean(acceptance[1:])) if num_records > 1 else None,
            "num_nonfinite": r["nonfinite"],
            "final_step_size": float(np.mean(np.concatenate(r["step_sizes"]))),
            "ess_fraction": float(kale.effective_sample_size(beta * e_base)) / e_base.shape[0],
        }

    # Beta chosen on validation data (see the module docstring), reported on test data.
    keys = [beta_key(b) for b in sweep]
    chosen, selection = _select_beta(sweep, by_beta, select_by, goal)

    # KALE on train and held-out data, and the ESS of exp(-E), over all base samples (record 0
    # of every chain; the same chains for every beta).
    energy = jax.jit(latent.energy_fn(trainer.spec.energy, e_vars, trainer.spec.energy_floor))
    e_fake = np.concatenate(runs[0]["base_energies"])
    results_kale = {}
    for split, name in (("train", "kale_train"), ("test", "kale_heldout")):
        e_data = _batched(energy, kale_data[split], s.chunk_size)
        results_kale[name] = float(kale.estimate(e_data, e_fake))
    ess_fraction = float(kale.effective_sample_size(e_fake)) / e_fake.shape[0]

    first = by_beta[keys[0]]
    sampling_seconds = sum(r["seconds"] for r in runs)
    results = {
        "workdir": os.path.abspath(workdir), "checkpoint_step": int(step),
        "dataset": info.name, "kernel": spec.kernel, "num_steps": spec.num_steps,
        "step_size": spec.step_size, "beta": sweep[0], "options": dict(spec.options),
        "num_samples": n, "chunk_size": s.chunk_size, "num_devices": len(devices),
        "record_steps": steps.tolist(), "metrics": first["metrics"],
        "base": {k: v[0] for k, v in first["metrics"].items()},
        "gebm": dict(first["final"]),
        **results_kale,
        "ess_fraction": ess_fraction, "mmd_noise": mmd_noise,
        "acceptance_rate": first["acceptance_rate"],
        "num_nonfinite": first["num_nonfinite"], "fid_enabled": extractor is not None,
        "final_step_size": first["final_step_size"],
        "betas": list(sweep), "chosen_beta": sweep[chosen], "select_by": select_by,
        "selection": selection, "by_beta": by_beta,
        "sampling_seconds": sampling_seconds,
        # chains x betas per second of sampling
        "latents_per_second": n * len(sweep) / sampling_seconds if sampling_seconds else None,
        "seconds": time.monotonic() - started,
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(sample_outputs.json_safe(results), f, indent=2)

    arrays = {"base": runs[0]["saved_base"], "gebm": runs[chosen]["saved_gebm"]}
    if len(sweep) > 1:
        arrays["betas"] = np.asarray(sweep, np.float64)
        arrays["gebm_per_beta"] = np.stack([r["saved_gebm"] for r in runs])
    _write_npz(os.path.join(outdir, "samples.npz"), arrays)

    label = spec.kernel if len(sweep) == 1 else (
        f"{spec.kernel}, beta {sweep[chosen]:g} (chosen by validation {select_by})")
    title = f"{info.name}, {label}, checkpoint {step}"
    sample_outputs.write_pictures(outdir, info, runs[chosen]["grid"], runs[chosen]["gif"], steps,
                                  by_beta[keys[chosen]]["metrics"], title, reference,
                                  mmd_noise=mmd_noise)
    if len(sweep) > 1:
        sample_outputs.plot_beta_sweep(os.path.join(outdir, "beta_sweep.png"), steps, sweep,
                                       by_beta, keys, chosen,
                                       title=f"{info.name}, {spec.kernel}, checkpoint {step}, "
                                       f"beta chosen by validation {select_by}")
    logging.info("results: %s", json.dumps(sample_outputs.json_safe(summary(results))))
    return results


def summary(results) -> dict:
    """The one-line summary of a results dict: the first beta's base / gebm values, the energy
    diagnostics (KALE train / held-out, ESS fraction, acceptance per beta) and the chosen beta
    with its test values."""
    by_beta = results["by_beta"]
    chosen = by_beta[beta_key(results["chosen_beta"])]
    return {"base": results["base"], "gebm": results["gebm"],
            **{k: results[k] for k in ("kale_train", "kale_heldout", "ess_fraction",
                                       "acceptance_rate", "betas", "chosen_beta", "select_by")},
            "acceptance_by_beta": {k: v["acceptance_rate"] for k, v in by_beta.items()},
            "chosen_test": chosen["final"]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax_logs()
    cli.log_cpu_devices_hint()
    from experiments import sample_outputs  # pylint: disable=g-import-not-at-top
    config, outdir = FLAGS.config, FLAGS.outdir
    if FLAGS.preset is not None:
        apply_preset(config, FLAGS.preset,
                     overrides=config_flags.get_override_values(FLAGS["config"]))
        outdir = outdir or os.path.join(FLAGS.workdir, "sample", FLAGS.preset)
    results = run(config, FLAGS.workdir, outdir, FLAGS.step)
    print(json.dumps(sample_outputs.json_safe(summary(results))), flush=True)


def console_main() -> None:
    """The `kale-sample` console script (pyproject.toml); also `python -m experiments.sample`."""
    from experiments import workdir_config  # pylint: disable=g-import-not-at-top
    _define_flags()
    cli.run(main, default_config=workdir_config.default_flag)


if __name__ == "__main__":
    console_main()
