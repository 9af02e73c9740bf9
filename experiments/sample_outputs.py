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


def _scatter_frames(gif: np.ndarray, steps, limits) -> List[np.ndarray]:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    frames = []
    for r, step in enumerate(steps):
        fig, ax = plt.subplots(figsize=(3, 3), dpi=64)
        ax.scatter(gif[r, :, 0], gif[r, :, 1], s=6)
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.set_title(f"MCMC step {step}", fontsize=8)
        frames.append(_figure_to_array(fig))
        plt.close(fig)
    return frames


def write_gif(path: str, frames: List[np.ndarray], duration_ms: int = 400) -> None:
    """An animated GIF looping over frames (uint8 (H, W) or (H, W, 3))."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def plot_curves(path: str, steps, curves: Dict[str, List[float]], title: str) -> None:
    """One panel per metric against MCMC steps (step 0 = base samples)."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    names = [k for k in curves if not k.endswith("_se")]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = np.asarray(curves[name], np.float64)
        error = curves.get(f"{name}_se")
        if error is not None:
            ax.errorbar(steps, values, yerr=np.asarray(error, np.float64), marker="o", ms=3)
        else:
            ax.plot(steps, values, marker="o", ms=3)
        ax.set_xlabel("MCMC step (0 = base)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_pictures(outdir: str, info, grid: np.ndarray, gif: np.ndarray, steps,
                   curves: Dict[str, List[float]], title: str,
                   reference: Optional[np.ndarray]) -> None:
    """base.png / gebm.png (images) or scatter.png (2-D/3-D vectors), chains.gif, metrics.png.

    grid: (2, n, ...) base and GEBM samples; gif: (records, chains, ...) a few chains.
    """
    if info.kind == "image":
        outputs.save_image_grid(os.path.join(outdir, "base.png"), grid[0])
        outputs.save_image_grid(os.path.join(outdir, "gebm.png"), grid[-1])
        frames = [outputs.image_grid(gif[r]) for r in range(gif.shape[0])]
        frames = [f[..., 0] if f.shape[-1] == 1 else f for f in frames]
        # Upscale small images so the animation is visible (nearest neighbour).
        factor = max(1, 128 // frames[0].shape[0])
        frames = [np.kron(f, np.ones((factor, factor) + (1,) * (f.ndim - 2), np.uint8))
                  for f in frames]
        write_gif(os.path.join(outdir, "chains.gif"), frames)
    elif info.shape in ((2,), (3,)):
        sets = {"base": grid[0], "GEBM": grid[-1]}
        if reference is not None:
            sets = {"data (held out)": reference, **sets}
        outputs.save_scatter(os.path.join(outdir, "scatter.png"), sets, title=title)
        finite = gif[np.isfinite(gif).all(axis=-1)]
        low, high = (np.percentile(finite, 1), np.percentile(finite, 99)) if finite.size else (-1, 1)
        pad = 0.2 * (high - low + 1e-6)
        write_gif(os.path.join(outdir, "chains.gif"),
                  _scatter_frames(gif, steps, (low - pad, high + pad)))
    plot_curves(os.path.join(outdir, "metrics.png"), steps, curves, title)


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
