"""What a run writes to its workdir: metrics (JSON lines + TensorBoard), progress lines, pictures.

* WORKDIR/metrics.jsonl: one JSON object per line, each with an integer 'step' (base steps) and
  float metrics.
* TensorBoard event files in WORKDIR (kale_jax.train.events: the `tensorboard` package, no
  TensorFlow): the scalars of metrics.jsonl under the same names, the config as text, and each
  evaluation's pictures (WORKDIR/samples/*_<step>.png) as images under samples/<kind>. Without
  the package, one info line names the install and no events are written.
* WORKDIR/samples/*.png: image grids (image data) or scatter plots (2-D / 3-D vector data), drawn
  with matplotlib's Agg backend (no display needed).

Writes are whole or not at all: a metrics row is appended whole (a write that fails part-way, e.g.
on a full disk, is cut off again) and pictures are written through a temporary file and a rename.
A failed write raises kale_jax.storage.WriteFailed (an OSError naming what and where).

Nothing is written at import.
"""
from __future__ import annotations

import glob
import io
import json
import math
import os
import time
from typing import Mapping, Optional, Sequence

import numpy as np
from absl import logging

from kale_jax import storage
from kale_jax.train import events

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"


class MetricWriter:
    """Appends metrics to WORKDIR/metrics.jsonl and (optionally) TensorBoard.

    Only process 0 writes (multi-host runs call it on every host; others do nothing).
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._summary_writer = None
        self._workdir = workdir
        if enabled:
            with storage.writing("the workdir", workdir):
                os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                with storage.writing("TensorBoard events", workdir):
                    self._summary_writer = _tensorboard_writer(workdir)

    def truncate_after(self, step: int) -> None:
        """Drops lines with step > `step` (left by a run that stopped after its last checkpoint),
        so a resumed run's metrics.jsonl reads as one uninterrupted run."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in _complete(lines) if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):  # a kill now leaves the old file or the new one
            storage.write_atomically(self.path, "".join(kept), what="metrics.jsonl")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Writes one record {'step': step, **metrics} (values converted to float).

        Raises:
          WriteFailed: the row (or its TensorBoard events) could not be written; metrics.jsonl
            is left without any part of the row.
        """
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _to_json(v) for k, v in metrics.items()})
        storage.append_line(self.path, json.dumps(record) + "\n", what="a metrics row")
        if self._summary_writer is not None:
            scalars = {k: v for k, v in record.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            with storage.writing("TensorBoard events", self._workdir):
                self._summary_writer.scalars(int(step), scalars)

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Markdown `text` to TensorBoard's text dashboard under `tag` (nothing without
        TensorBoard events)."""
        if self._summary_writer is not None:
            with storage.writing("TensorBoard events", self._workdir):
                self._summary_writer.text(int(step), tag, text)

    def write_config(self, step: int, config_json: str) -> None:
        """The run's config (its JSON) as TensorBoard text 'config', shown as a code block."""
        self.write_text(step, "config", "\n".join("    " + line
                                                 for line in config_json.splitlines()))

    def write_pictures(self, step: int, samples_dir: str) -> list:
        """The PNG pictures of base step `step` in `samples_dir` (<kind>_<step:07d>.png, as the
        evaluators write them) to TensorBoard images, tag 'samples/<kind>'.

        Returns:
          The tags written (empty without TensorBoard events).
        """
        if self._summary_writer is None:
            return []
        tags = []
        for path in sorted(glob.glob(os.path.join(samples_dir, f"*_{int(step):07d}.png"))):
            with open(path, "rb") as f:
                png = f.read()
            tag = "samples/" + os.path.basename(path)[:-len(f"_{int(step):07d}.png")]
            with storage.writing("TensorBoard events", self._workdir):
                self._summary_writer.image(int(step), tag, png)
            tags.append(tag)
        return tags

    def flush(self) -> None:
        """Flushes TensorBoard events (WriteFailed when they cannot be written)."""
        if self._summary_writer is not None:
            with storage.writing("TensorBoard events", self._workdir):
                self._summary_writer.flush()

    def close(self) -> None:
        """Flushes and closes TensorBoard's writer (WriteFailed as `flush`; closed anyway)."""
        if self._summary_writer is not None:
            writer, self._summary_writer = self._summary_writer, None
            with storage.writing("TensorBoard events", self._workdir):
                writer.close()


def _to_json(value):
    value = np.asarray(value)
    if value.ndim == 0:
        value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # JSON has no NaN/inf; keep the line parseable
        return value
    return value.tolist()


def _tensorboard_writer(workdir: str) -> Optional[events.EventWriter]:
    """A TensorBoard event file in `workdir`, or None (one info line) without `tensorboard`."""
    if not events.available():
        logging.info("No TensorBoard events: the tensorboard package is not installed (%s); "
                     "metrics.jsonl has every metric.", events.INSTALL_HINT)
        return None
    return events.EventWriter(workdir)


def read_metrics(workdir: str) -> list:
    """All records of WORKDIR/metrics.jsonl, in order (a last line cut short by a kill is
    skipped)."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in _complete(f) if line.strip()]


def _complete(lines) -> list:
    """`lines` without a last line that lacks its newline: every record is written with one, so
    such a line is a write cut short (the process was killed) and is dropped."""
    lines = list(lines)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines


class Progress:
    """Formats the progress line: step, rate (training steps/s since the last line, evaluation
    time left out) and ETA (at that rate)."""

    def __init__(self, start_step: int, num_steps: int):
        self.num_steps = num_steps
        self._last_step = start_step
        self._last_time = time.monotonic()

    def pause(self, seconds: float) -> None:
        """Leaves `seconds` (spent evaluating) out of the next rate."""
        self._last_time += seconds

    def line(self, step: int, metrics: Mapping[str, float]) -> tuple:
        """Returns (text, steps_per_second) and restarts the rate clock at `step`."""
        now = time.monotonic()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        text = (f"step {step}/{self.num_steps} ({100.0 * step / self.num_steps:.1f}%) "
                f"{rate:.2f} steps/s ETA {format_duration(eta)} | {shown}")
        return text, rate


def format_duration(seconds: float) -> str:
    """'1h02m03s', '2m03s'; '?' when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------------------------- pictures
def image_grid(images: np.ndarray, columns: Optional[int] = None) -> np.ndarray:
    """Tiles images (N, H, W, C) in [-1, 1] into one uint8 picture (rows*H, columns*W, C).

    Missing cells of the last row are black; values are clipped to [-1, 1].
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.full((rows * h, columns * w, c), -1.0, np.float32)  # black background
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return np.round((np.clip(grid, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _write_picture(path: str, content: bytes) -> None:
    """Writes a picture's bytes whole (temporary file and rename); WriteFailed on failure."""
    with storage.writing("a picture", path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    storage.write_atomically(path, content, what="a picture")


def save_image_grid(path: str, images: np.ndarray, columns: Optional[int] = None) -> None:
    """Writes image_grid(images) as a PNG (grey for one channel).

    Raises:
      WriteFailed: the file could not be written (nothing is left half-written).
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    grid = image_grid(images, columns)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    _write_picture(path, buffer.getvalue())


def mmd_note(value: float, noise: Optional[float] = None) -> str:
    """A panel title's metric, e.g. 'MMD² 1.2e-03 (noise 4e-05)'.

    Args:
      value: MMD^2 to the reference.
      noise: its noise level (kale_jax.metrics.mmd2_noise); None: not shown.
    Returns:
      the text.
    """
    text = f"MMD² {value:.1e}"
    return text if noise is None else f"{text} (noise {noise:.0e})"


def _projections(dim: int) -> list:
    """The coordinate pairs drawn for `dim`-D points: (0, 1) for 2-D, all three pairs for 3-D."""
    return [(0, 1)] if dim == 2 else [(0, 1), (0, 2), (1, 2)]


def _square_limits(sets: Mapping[str, np.ndarray], dim: int) -> np.ndarray:
    """(dim, 2) axis limits: each coordinate's central 99% over all sets, padded, every axis
    with the same span (equal scales, so shapes are not distorted)."""
    finite = np.concatenate([v[np.all(np.isfinite(v), axis=1)] for v in sets.values()])
    if not len(finite):
        return np.tile([-1.0, 1.0], (dim, 1))
    low, high = np.percentile(finite, 0.5, axis=0), np.percentile(finite, 99.5, axis=0)
    half = 0.55 * float(np.max(high - low)) + 1e-6
    centre = (low + high) / 2
    return np.stack([centre - half, centre + half], axis=1)


def scatter_figure(point_sets: Mapping[str, np.ndarray], title: str = "",
                   limits: Optional[Sequence[float]] = None,
                   notes: Optional[Mapping[str, str]] = None):
    """Scatter plots of 2-D or 3-D point sets as 2-D projections: a column per set, a row per
    coordinate pair (one for 2-D; x1-x2, x1-x3, x2-x3 for 3-D), on shared axis limits.

    Args:
      point_sets: name -> (N, D) points, D in (2, 3), the same D for all.
      title: figure title.
      limits: (low, high) for every axis; default from the data (central 99%, equal spans,
        non-finite points ignored).
      notes: name -> text added to that set's panel titles (e.g. mmd_note(...)).
    Returns:
      a matplotlib Figure (Agg); close it with matplotlib.pyplot.close.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    sets = {k: np.asarray(v, np.float64) for k, v in point_sets.items()}
    dims = {v.shape[1] if v.ndim == 2 else None for v in sets.values()}
    if len(dims) != 1 or not dims <= {2, 3}:
        raise ValueError(f"point sets must all be (N, 2) or all (N, 3), got "
                         f"{[v.shape for v in sets.values()]}")
    dim = dims.pop()
    bounds = (np.tile(np.asarray(limits, np.float64), (dim, 1)) if limits is not None
              else _square_limits(sets, dim))
    pairs = _projections(dim)
    notes = notes or {}
    fig, axes = plt.subplots(len(pairs), len(sets), figsize=(3.3 * len(sets), 3.2 * len(pairs)),
                             squeeze=False)
    for col, (name, points) in enumerate(sets.items()):
        colour = "0.2" if col == 0 and len(sets) > 2 else f"C{col}"
        label = f"{name}\n{notes[name]}" if name in notes else name
        for row, (i, j) in enumerate(pairs):
            ax = axes[row, col]
            ax.scatter(points[:, i], points[:, j], s=2, alpha=0.35, linewidths=0, color=colour,
                       rasterized=True)
            ax.set_xlim(*bounds[i])
            ax.set_ylim(*bounds[j])
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel(f"x{i + 1}")
            ax.set_ylabel(f"x{j + 1}")
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.25, lw=0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_scatter(path: str, point_sets: Mapping[str, np.ndarray], title: str = "",
                 limits: Optional[Sequence[float]] = None,
                 notes: Optional[Mapping[str, str]] = None) -> None:
    """Writes scatter_figure(point_sets, title, limits, notes) as a PNG.

    Args:
      path: output file.
      point_sets, title, limits, notes: as scatter_figure.
    Raises:
      WriteFailed: the file could not be written (nothing is left half-written).
    """
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig = scatter_figure(point_sets, title, limits, notes)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    _write_picture(path, buffer.getvalue())
