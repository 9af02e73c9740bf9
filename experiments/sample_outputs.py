"""Pictures and JSON of experiments.sample: grids, scatter plots, the chain GIF, metric curves."""
import math
import os
from typing import Dict, List, Optional

import numpy as np

from kale_jax.train import outputs


def json_safe(value):
    """NaN / inf -> None, numpy scalars -> Python (results.json stays strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _figure_to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


TRAIL_RECORDS = 4  # records of each chain's recent path drawn behind it in chains.gif
GIF_PIXELS = 480  # chains.gif's side for vector data (images: at least 400 px)


def _chain_limits(gif: np.ndarray) -> np.ndarray:
    """(D, 2) axis limits over all chains and records: central 98%, padded, equal spans."""
    finite = gif.reshape(-1, gif.shape[-1])
    finite = finite[np.isfinite(finite).all(axis=-1)]
    if not finite.size:
        return np.tile([-1.0, 1.0], (gif.shape[-1], 1))
    low, high = np.percentile(finite, 1, axis=0), np.percentile(finite, 99, axis=0)
    half = 0.6 * float(np.max(high - low)) + 1e-6
    centre = (low + high) / 2
    return np.stack([centre - half, centre + half], axis=1)


def _trail_segments(gif: np.ndarray, r: int, i: int, j: int):
    """Segments (chains * k, 2, 2) of each chain's path over the k <= TRAIL_RECORDS records
    before record r in coordinates (i, j), and their ages in records (0 = newest .. k - 1)."""
    first = max(0, r - TRAIL_RECORDS)
    path = gif[first:r + 1][..., [i, j]]  # (k + 1, chains, 2)
    segments = np.stack([path[:-1], path[1:]], axis=2)  # (k, chains, 2, 2)
    ages = np.repeat(np.arange(path.shape[0] - 2, -1, -1), path.shape[1])
    return segments.reshape(-1, 2, 2), ages


def chain_frames(gif: np.ndarray, steps, pixels: int = GIF_PIXELS) -> List[np.ndarray]:
    """chains.gif's frames for 2-D / 3-D chains: at each record the chains' points (x1, x2) and
    each chain's recent path as a line fading with age (the last TRAIL_RECORDS records).

    Args:
      gif: (records, chains, D) chain positions in data space, D in (2, 3).
      steps: (records,) MCMC step of each record.
      pixels: the frames' side.
    Returns:
      records uint8 (pixels, pixels, 3) frames.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.collections  # pylint: disable=g-import-not-at-top
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    limits = _chain_limits(gif)
    fig, ax = plt.subplots(figsize=(pixels / 96, pixels / 96), dpi=96)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.grid(alpha=0.25, lw=0.5)
    trails = matplotlib.collections.LineCollection([], linewidths=1.0)
    ax.add_collection(trails)
    points = ax.scatter(gif[0, :, 0], gif[0, :, 1], s=10, color="C3", zorder=3)
    ax.set_title("chains", fontsize=9)  # reserves the title's room in tight_layout
    fig.tight_layout()
    frames = []
    for r, step in enumerate(steps):
        segments, ages = _trail_segments(gif, r, 0, 1)
        colours = np.zeros((len(ages), 4))
        colours[:, 2] = 0.6
        colours[:, 3] = 0.85 * (1.0 - ages / TRAIL_RECORDS)  # older segments fade out
        trails.set_segments(segments)
        trails.set_color(colours)
        points.set_offsets(gif[r, :, :2])
        ax.set_title(f"{gif.shape[1]} chains, MCMC step {step} (trails: last "
                     f"{min(r, TRAIL_RECORDS)} records)", fontsize=9)
        frames.append(_figure_to_array(fig))
    plt.close(fig)
    return frames


def chains_figure(gif: np.ndarray, steps, title: str = ""):
    """chains.png: every chain's whole path (a line per chain, start o, end x), a panel per
    coordinate pair (x1-x2 for 2-D; x1-x2, x1-x3, x2-x3 for 3-D).

    Args:
      gif: (records, chains, D) chain positions in data space, D in (2, 3).
      steps: (records,) MCMC step of each record.
      title: figure title.
    Returns:
      a matplotlib Figure; close it with matplotlib.pyplot.close.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    dim = gif.shape[-1]
    pairs = [(0, 1)] if dim == 2 else [(0, 1), (0, 2), (1, 2)]
    limits = _chain_limits(gif)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4.4), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0.0, 0.95, gif.shape[1]))
    for ax, (i, j) in zip(axes[0], pairs):
        for c in range(gif.shape[1]):
            ax.plot(gif[:, c, i], gif[:, c, j], lw=0.8, alpha=0.7, color=colours[c])
        ax.scatter(gif[0, :, i], gif[0, :, j], s=10, marker="o", facecolors="none",
                   edgecolors="0.3", linewidths=0.6, label=f"start (step {steps[0]})")
        ax.scatter(gif[-1, :, i], gif[-1, :, j], s=14, marker="x", color="C3", linewidths=0.8,
                   label=f"end (step {steps[-1]})")
        ax.set_xlim(*limits[i])
        ax.set_ylim(*limits[j])
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"x{i + 1}")
        ax.set_ylabel(f"x{j + 1}")
        ax.set_title(f"{gif.shape[1]} chain paths, x{i + 1}-x{j + 1}", fontsize=9)
        ax.grid(alpha=0.25, lw=0.5)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_gif(path: str, frames: List[np.ndarray], duration_ms: int = 400) -> None:
    """An animated GIF looping over frames (uint8 (H, W) or (H, W, 3))."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def curves_figure(steps, curves: Dict[str, List[float]], title: str,
                  noise: Optional[Dict[str, float]] = None):
    """metrics.png: a panel per metric against MCMC steps (step 0 = base samples), y-labelled
    with the metric and its unit (METRIC_LABELS), with error bars where curves has
    '<name>_se', and a metric's noise level (true vs true) as a band around 0.

    Args:
      steps: (R,) recorded MCMC steps.
      curves: name -> (R,) values; '<name>_se' -> (R,) standard errors of '<name>'.
      title: figure title.
      noise: name -> noise level (e.g. {'mmd': metrics.mmd2_noise(...)}): drawn as the band
        [-noise, +noise], where two true samples' values lie about 68% of the time.
    Returns:
      a matplotlib Figure; close it with matplotlib.pyplot.close.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    noise = noise or {}
    names = [k for k in curves if not k.endswith("_se")]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        label, unit = METRIC_LABELS.get(name, (name, name))
        values = np.asarray(curves[name], np.float64)
        error = curves.get(f"{name}_se")
        if error is not None:
            ax.errorbar(steps, values, yerr=np.asarray(error, np.float64), marker="o", ms=3,
                        capsize=2, label="value ± 1 s.e.")
        else:
            ax.plot(steps, values, marker="o", ms=3)
        level = noise.get(name)
        if level is not None and math.isfinite(level):
            ax.axhspan(-level, level, color="0.6", alpha=0.3, lw=0,
                       label=f"true vs true ±1 sd ({level:.0e})")
            ax.axhline(0.0, color="0.4", lw=0.8)
        if error is not None or level is not None:
            ax.legend(fontsize=7)
        ax.set_xlabel("MCMC step (0 = base)")
        ax.set_ylabel(unit)
        ax.set_title(label, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(path: str, steps, curves: Dict[str, List[float]], title: str,
                noise: Optional[Dict[str, float]] = None) -> None:
    """Writes curves_figure(steps, curves, title, noise) to `path` (PNG)."""
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig = curves_figure(steps, curves, title, noise)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_pictures(outdir: str, info, grid: np.ndarray, gif: np.ndarray, steps,
                   curves: Dict[str, List[float]], title: str,
                   reference: Optional[np.ndarray], mmd_noise: Optional[float] = None) -> None:
    """base.png / gebm.png (images) or scatter.png and chains.png (2-D/3-D vectors), chains.gif,
    metrics.png.

    Args:
      outdir: output directory.
      info: the dataset's DatasetInfo.
      grid: (2, n, ...) base and GEBM samples.
      gif: (records, chains, ...) the first chains at every record.
      steps: (records,) MCMC steps; curves: name -> (records,) metric values; title: a title.
      reference: held-out data drawn beside 2-D/3-D samples (None: not drawn).
      mmd_noise: MMD^2's noise level (kale_jax.metrics.mmd2_noise), shown with MMD^2.
    """
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    if info.kind == "image":
        outputs.save_image_grid(os.path.join(outdir, "base.png"), grid[0])
        outputs.save_image_grid(os.path.join(outdir, "gebm.png"), grid[-1])
        frames = [outputs.image_grid(gif[r]) for r in range(gif.shape[0])]
        frames = [f[..., 0] if f.shape[-1] == 1 else f for f in frames]
        # Upscale small images to at least 400 px so the animation is visible (nearest neighbour).
        factor = max(1, math.ceil(400 / frames[0].shape[0]))
        frames = [np.kron(f, np.ones((factor, factor) + (1,) * (f.ndim - 2), np.uint8))
                  for f in frames]
        write_gif(os.path.join(outdir, "chains.gif"), frames)
    elif info.shape in ((2,), (3,)):
        sets = {"base": grid[0], "GEBM": grid[-1]}
        notes = {}
        if "mmd" in curves:
            notes = {"base": outputs.mmd_note(curves["mmd"][0], mmd_noise),
                     "GEBM": outputs.mmd_note(curves["mmd"][-1], mmd_noise)}
        if reference is not None:
            sets = {"data (held out)": reference, **sets}
            if mmd_noise is not None:
                notes["data (held out)"] = f"MMD² noise {mmd_noise:.0e}"
        outputs.save_scatter(os.path.join(outdir, "scatter.png"), sets, title=title, notes=notes)
        write_gif(os.path.join(outdir, "chains.gif"), chain_frames(gif, steps))
        fig = chains_figure(gif, steps, title)
        fig.savefig(os.path.join(outdir, "chains.png"), dpi=80)
        plt.close(fig)
    plot_curves(os.path.join(outdir, "metrics.png"), steps, curves, title,
                noise=None if mmd_noise is None else {"mmd": mmd_noise})


# Titles and y-axis labels of the metrics experiments.sample records (others show their name).
METRIC_LABELS = {
    "energy": ("mean energy E(B(z)) over chains", "E"),
    "acceptance": ("acceptance rate (per block of steps)", "fraction accepted"),
    "mmd": ("MMD² to held-out data (lower is closer)", "MMD²"),
    "fid_train": ("FID to training-split statistics", "FID"),
    "fid_test": ("FID to test-split statistics", "FID"),
    "kid_test": ("KID to the test split", "KID"),
    "share_within_3std": ("share of samples within 3 std of a mode", "share"),
    "modes_covered": ("modes covered (a sample within 3 std)", "modes"),
    "mode_kl": ("KL(mode histogram || uniform), nats", "nats"),
}


def plot_beta_sweep(path: str, steps, betas, by_beta: Dict[str, dict], keys: List[str],
                    chosen: int, title: str) -> None:
    """beta_sweep.png: a row per metric; left the metric against MCMC steps, one line per beta;
    right the last record's value against beta (log axis), test (solid) and, for MMD,
    validation (dashed), with the chosen beta marked.

    Args:
      path: output PNG.
      steps: (R,) recorded MCMC steps.
      betas: (B,) inverse temperatures, > 0.
      by_beta: results.json's by_beta; keys: its key of each beta, in the order of `betas`.
      chosen: index of the chosen beta.
      title: figure title.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    import matplotlib.ticker  # pylint: disable=g-import-not-at-top
    names = [k for k in by_beta[keys[0]]["metrics"] if not k.endswith("_se")]
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.6 * len(names)), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(betas)))
    order = np.argsort(betas)
    sorted_betas = np.asarray(betas, np.float64)[order]
    for row, name in zip(axes, names):
        label, unit = METRIC_LABELS.get(name, (name, name))
        left, right = row
        for i, (beta, key) in enumerate(zip(betas, keys)):
            values = np.asarray(by_beta[key]["metrics"][name], np.float64)
            left.plot(steps, values, marker="o", ms=2, color=colours[i],
                      lw=2.2 if i == chosen else 1.0, label=f"beta {beta:g}")
        left.set_xlabel("MCMC step (0 = base)")
        left.set_ylabel(unit)
        left.set_title(f"{label}, against steps", fontsize=9)
        left.grid(alpha=0.3)
        final = np.asarray([by_beta[k]["final"][name] for k in keys], np.float64)[order]
        right.plot(sorted_betas, final, marker="o", label="test" if name == "mmd" else "value")
        chosen_rank = int(np.where(order == chosen)[0][0])
        right.plot(sorted_betas[chosen_rank], final[chosen_rank], marker="*", ms=12, color="k",
                   ls="none", label=f"chosen beta {betas[chosen]:g}")
        if name == "mmd":
            validation = np.asarray([by_beta[k]["validation"].get("mmd", np.nan) for k in keys],
                                    np.float64)[order]
            right.plot(sorted_betas, validation, marker="s", ls="--", label="validation")
        right.axvline(betas[chosen], color="k", ls=":", lw=1)
        right.set_xscale("log")
        right.set_xticks(sorted_betas)
        right.set_xticklabels([f"{b:g}" for b in sorted_betas])
        right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        right.set_xlabel("beta (inverse temperature)")
        right.set_ylabel(unit)
        right.set_title(f"{label}, at the last step", fontsize=9)
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
