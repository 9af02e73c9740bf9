"""curve: a 2-D toy with a known answer, a non-uniform density on a wavy 1-D curve.

The paper's toy figure (ground truth, GAN, GEBM, EBM) shows such a set: mass on a thin 1-D
support, unevenly spread along it. A GAN's generator tends to find the support but spread mass
evenly; an EBM with a full-dimensional density finds the density roughly but blurs the support;
a GEBM can get both (the base the support, the energy the density along it).

Curve: c(t) = (4 t - 2, 0.6 sin(3 pi t)), t in [0, 1] (CURVE): 1.5 waves, x in [-2, 2],
y in [-0.6, 0.6]. Speed |c'(t)| = sqrt(16 + (1.8 pi cos(3 pi t))^2), in [4, 6.93]; curvature
at most 0.6 (3 pi)^2 / 4^2 = 3.331 (at the crests and trough t = 1/6, 1/2, 5/6), so the radius of
curvature is at least 0.300. That is also the curve's reach (tested): a point within 0.3 of the
curve has a unique nearest point, and c(t) + r n(t) (n the unit normal, |r| < 0.3) projects back
to c(t) at distance |r| exactly. Arc length s(t) is exact (an incomplete elliptic integral of the
second kind, `WavyCurve.arc_length`); total length L = 5.5617198.

Density of the curve parameter (T_MIXTURE): the mixture
0.5 Beta(9, 41) + 0.2 Beta(25, 25) + 0.3 Beta(41, 9): three modes at t = 1/6, 1/2, 5/6 (the
crests and the trough of the wave; to 1e-4, the other components' tails barely move them) with
unequal heights 3.74, 1.12, 2.25, and the density between them falls below a sixth of the
lowest (0.18). Component standard deviations 0.05-0.07 in t, i.e. 0.2-0.3 in arc length.
Exact samples: t from the mixture, x = c(t) (plus optional isotropic Gaussian noise of std
``data.noise``, default 0: zero thickness).
The arc-length coordinate S = s(T) has CDF F_S(s) = F_T(t(s)) (s is increasing) and density
p_S(s) = p_T(t) / |c'(t)| at t = t(s).

Exact metrics (`metrics`, for samples of a model; every one is 0 (1 for the share) for the
data itself in the limit of many samples):
  curve_distance   mean Euclidean distance to the curve (min)
  on_curve_share   fraction of samples within ON_CURVE_TOLERANCE = 0.05 of the curve (max)
  arc_w1           Wasserstein-1 distance (in arc-length units) between the samples' projected
                   arc-length coordinates and the true law of S, against its exact CDF (min)
  arc_ks           Kolmogorov-Smirnov statistic of the same against the exact CDF (min)
The arc metrics score the density along the curve of wherever the samples project to; the first
two score the support. They describe the zero-thickness curve whatever ``data.noise`` is.
Their floor for n exact samples: with probability >= 0.999, arc_ks < 1.95 / sqrt(n) (DKW) and
arc_w1 < 1.95 L / sqrt(n); E[arc_w1] <= integral sqrt(F_S (1 - F_S)) ds / sqrt(n) = 1.95 / sqrt(n).
At n = 2000 (200 replicates) arc_w1 had mean 0.033 and arc_ks 0.019; uniform in arc length (the
right support, the wrong density) scores arc_w1 0.48 and arc_ks 0.21 in the limit.

Config keys: data.noise (0.0), the std of isotropic Gaussian noise added to each coordinate.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from scipy import special

from kale_jax import checks

# (weight, a, b) of each Beta(a, b) component of the law of t; mode (a - 1) / (a + b - 2).
T_MIXTURE = ((0.5, 9.0, 41.0), (0.2, 25.0, 25.0), (0.3, 41.0, 9.0))
ON_CURVE_TOLERANCE = 0.05  # on_curve_share: distance to the curve <= this (data units)
PROJECTION_GRID = 1024  # coarse grid cells in t for `WavyCurve.project`
GOLDEN_ITERATIONS = 45  # bracket 2 / 1024 shrinks by 0.618^45 to ~3e-12 in t
W1_GRID = 1 << 14  # cells in t of the integration grid of `arc_w1`
PLOT_LIMITS = ((-2.4, 2.4), (-1.2, 1.2))  # (x, y) axis limits of `plot_panel`
METRIC_GOALS = {"curve_distance": "min", "on_curve_share": "max", "arc_w1": "min",
                "arc_ks": "min"}

_INVERSE_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class WavyCurve:
    """The plane curve c(t) = (width t - width / 2, amplitude sin(omega t)), t in [0, 1].

    Attributes:
      width: extent in x (data units); x runs over [-width / 2, width / 2].
      amplitude: height of the wave (data units); 0 gives a straight segment.
      omega: angular frequency in t (radians per unit t); 3 pi gives 1.5 waves.
    """

    width: float = 4.0
    amplitude: float = 0.6
    omega: float = 3.0 * math.pi

    def point(self, t: np.ndarray) -> np.ndarray:
        """c(t). Args: t (...,). Returns: float64 (..., 2)."""
        t = np.asarray(t, np.float64)
        return np.stack([self.width * t - self.width / 2,
                         self.amplitude * np.sin(self.omega * t)], axis=-1)

    def velocity(self, t: np.ndarray) -> np.ndarray:
        """c'(t). Args: t (...,). Returns: float64 (..., 2), data units per unit t."""
        t = np.asarray(t, np.float64)
        return np.stack([np.full_like(t, self.width),
                         self.amplitude * self.omega * np.cos(self.omega * t)], axis=-1)

    def speed(self, t: np.ndarray) -> np.ndarray:
        """|c'(t)| = ds / dt. Args: t (...,). Returns: float64 (...,)."""
        t = np.asarray(t, np.float64)
        return np.hypot(self.width, self.amplitude * self.omega * np.cos(self.omega * t))

    def normal(self, t: np.ndarray) -> np.ndarray:
        """Unit normal at c(t), the tangent turned by +90 degrees. Returns: float64 (..., 2)."""
        velocity = self.velocity(t)
        return np.stack([-velocity[..., 1], velocity[..., 0]], axis=-1) / self.speed(t)[..., None]

    def arc_length(self, t: np.ndarray) -> np.ndarray:
        """s(t), the length of the curve from c(0) to c(t), exact to float64 rounding.

        |c'(u)| = sqrt(w^2 + b^2 cos^2(omega u)) (b = amplitude omega)
                = sqrt(w^2 + b^2) sqrt(1 - m sin^2(omega u)) with m = b^2 / (w^2 + b^2),
        so s(t) = sqrt(w^2 + b^2) / omega * E(omega t | m), E the incomplete elliptic integral of
        the second kind (scipy.special.ellipeinc, valid for any angle).

        Args: t (...,) in [0, 1]. Returns: float64 (...,), data units.
        """
        t = np.asarray(t, np.float64)
        b = self.amplitude * self.omega
        if b == 0.0 or self.omega == 0.0:
            return self.speed(t) * t  # constant speed
        full = math.hypot(self.width, b)
        return full / self.omega * special.ellipeinc(self.omega * t, b * b / (full * full))

    @property
    def length(self) -> float:
        """Total arc length s(1), data units."""
        return float(self.arc_length(1.0))

    def t_of_arc_length(self, s: np.ndarray) -> np.ndarray:
        """The inverse of `arc_length`: t with s(t) = s, to ~1e-14.

        Newton's method from t = s / L, safeguarded by a bracket [low, high] around the root
        (s is increasing): a Newton step that leaves the bracket is replaced by bisection. For
        CURVE (speed ratio 1.73) the plain steps already contract and converge in ~5 steps.

        Args: s (...,), clipped to [0, length]. Returns: float64 (...,) in [0, 1].
        """
        s = np.clip(np.asarray(s, np.float64), 0.0, self.length)
        t = s / self.length
        low, high = np.zeros_like(t), np.ones_like(t)
        for _ in range(100):
            residual = self.arc_length(t) - s
            low = np.where(residual <= 0, t, low)
            high = np.where(residual >= 0, t, high)
            newton = t - residual / self.speed(t)
            update = np.where((newton > low) & (newton < high), newton, 0.5 * (low + high))
            converged = np.all(np.abs(update - t) <= 1e-14)
            t = update
            if converged:
                break
        return t

    def _squared_distance(self, t: np.ndarray, points: np.ndarray) -> np.ndarray:
        dx = self.width * t - self.width / 2 - points[..., 0]
        dy = self.amplitude * np.sin(self.omega * t) - points[..., 1]
        return dx * dx + dy * dy

    def project(self, points: np.ndarray, *, grid_size: int = PROJECTION_GRID,
                chunk_size: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
        """Nearest points on the curve: the curve parameter t* and the distance of each point.

        A dense grid of `grid_size` cells in t gives the nearest grid node j; golden-section
        search over [t_{j-1}, t_{j+1}] (bracket shrunk to ~3e-12) then finds the minimum of
        |c(t) - x|^2: the distance to float64 rounding (~1e-15), t* to ~1e-8 (the squared
        distance is flat at its minimum, so rounding limits t*). For points within the reach
        (0.3 for CURVE) this is the exact nearest point. Farther out, two distant parts of the
        curve can be almost equally near; the grid may then pick the slightly farther one, but
        the returned distance is still within (h^2 / 8)(1 / D + kappa) of the true one
        (h <= max speed / grid_size = 6.8e-3 for CURVE, D the distance, kappa <= 3.33 the
        curvature): < 4e-5 at D >= 0.3. Against a 400001-node brute force on 300 points in
        [-3, 3]^2 the distances agreed to 2e-9 (the brute force's own error). About 0.7 s per
        10^5 points on one CPU core.

        Args:
          points: (N, 2) in data units.
          grid_size: coarse grid cells in t.
          chunk_size: points per (chunk, grid) distance block (bounds memory to
            chunk_size * (grid_size + 1) float64s).
        Returns:
          t_star: float64 (N,) in [0, 1]; NaN for non-finite points.
          distance: float64 (N,) >= 0; inf for non-finite points.
        """
        points = np.asarray(points, np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {points.shape}.")
        count = points.shape[0]
        t_star = np.full(count, np.nan)
        distance = np.full(count, np.inf)
        finite = np.all(np.isfinite(points), axis=1)
        inside = points[finite]
        if inside.shape[0] == 0:
            return t_star, distance
        nodes = np.linspace(0.0, 1.0, grid_size + 1)
        node_points = self.point(nodes)  # (G + 1, 2)
        nearest = np.empty(inside.shape[0], np.int64)
        for start in range(0, inside.shape[0], chunk_size):
            block = inside[start:start + chunk_size]
            squared = ((block[:, None, 0] - node_points[None, :, 0]) ** 2
                       + (block[:, None, 1] - node_points[None, :, 1]) ** 2)
            nearest[start:start + chunk_size] = np.argmin(squared, axis=1)
        low = nodes[np.maximum(nearest - 1, 0)]
        high = nodes[np.minimum(nearest + 1, grid_size)]
        t_found = self._golden_section(inside, low, high)
        t_star[finite] = t_found
        distance[finite] = np.sqrt(self._squared_distance(t_found, inside))
        return t_star, distance

    def _golden_section(self, points: np.ndarray, low: np.ndarray,
                        high: np.ndarray) -> np.ndarray:
        """argmin over [low, high] of |c(t) - x|^2 per point (a local minimum, or an end)."""
        ends = (low, high)
        inner_low = high - _INVERSE_GOLDEN * (high - low)
        inner_high = low + _INVERSE_GOLDEN * (high - low)
        f_low = self._squared_distance(inner_low, points)
        f_high = self._squared_distance(inner_high, points)
        for _ in range(GOLDEN_ITERATIONS):
            left = f_low < f_high  # the minimum lies in [low, inner_high]
            high = np.where(left, inner_high, high)
            low = np.where(left, low, inner_low)
            new = np.where(left, high - _INVERSE_GOLDEN * (high - low),
                           low + _INVERSE_GOLDEN * (high - low))
            f_new = self._squared_distance(new, points)
            inner_high, inner_low = (np.where(left, inner_low, new),
                                     np.where(left, new, inner_high))
            f_high, f_low = np.where(left, f_low, f_new), np.where(left, f_new, f_high)
        # The bracket's ends themselves (e.g. t = 0 or 1 for points beyond the curve's ends),
        # which golden-section search only approaches.
        candidates = np.stack([0.5 * (low + high), *ends])  # (3, N)
        best = np.argmin(self._squared_distance(candidates, points[None]), axis=0)
        return np.take_along_axis(candidates, best[None], axis=0)[0]


CURVE = WavyCurve()


# ----------------------------------------------------------------------------------------------
# The law of the curve parameter t and of the arc length s = s(t).

def _mixture() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    weights, a, b = (np.array(column, np.float64) for column in zip(*T_MIXTURE))
    return weights, a, b


def t_pdf(t: np.ndarray) -> np.ndarray:
    """Density of the curve parameter T (the Beta mixture). Args: t (...,). Returns: (...,)."""
    weights, a, b = _mixture()
    t = np.asarray(t, np.float64)[..., None]
    inside = (t >= 0.0) & (t <= 1.0)
    clipped = np.clip(t, 0.0, 1.0)
    log_pdf = ((a - 1) * np.log(np.where(clipped > 0, clipped, 1.0))
               + (b - 1) * np.log(np.where(clipped < 1, 1 - clipped, 1.0)) - special.betaln(a, b))
    pdf = np.where(inside & (clipped > 0) & (clipped < 1), np.exp(log_pdf), 0.0)
    return np.sum(weights * pdf, axis=-1)


def t_cdf(t: np.ndarray) -> np.ndarray:
    """CDF of T, exact (regularised incomplete beta). Args: t (...,). Returns: (...,) in [0, 1]."""
    weights, a, b = _mixture()
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0)[..., None]
    return np.sum(weights * special.betainc(a, b, t), axis=-1)


def arc_cdf(s: np.ndarray, curve: WavyCurve = CURVE) -> np.ndarray:
    """CDF of the arc-length coordinate S = s(T): F_T(t(s)). Args: s (...,). Returns: (...,)."""
    s = np.asarray(s, np.float64)
    return t_cdf(curve.t_of_arc_length(np.clip(s, 0.0, curve.length)))


def arc_pdf(s: np.ndarray, curve: WavyCurve = CURVE) -> np.ndarray:
    """Density of S along the curve, p_T(t) / |c'(t)| at t = t(s), per unit arc length.

    Args: s (...,). Returns: (...,); 0 outside [0, length].
    """
    s = np.asarray(s, np.float64)
    t = curve.t_of_arc_length(np.clip(s, 0.0, curve.length))
    inside = (s >= 0.0) & (s <= curve.length)
    return np.where(inside, t_pdf(t) / curve.speed(t), 0.0)


# ----------------------------------------------------------------------------------------------
# Exact samples.

KeyOrGenerator = Union[jax.Array, np.random.Generator]


def _generator(key: KeyOrGenerator) -> np.random.Generator:
    """A numpy Generator: `key` itself, or one seeded by a JAX key's data (deterministic)."""
    if isinstance(key, np.random.Generator):
        return key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel())


def sample_t(key: KeyOrGenerator, num_samples: int) -> np.ndarray:
    """`num_samples` exact draws of the curve parameter T: float64 (N,) in [0, 1].

    A component k with probability weight_k, then t ~ Beta(a_k, b_k) (numpy's sampler).
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    rng = _generator(key)
    weights, a, b = _mixture()
    component = rng.choice(len(weights), size=num_samples, p=weights)
    return rng.beta(a[component], b[component])


def sample(key: KeyOrGenerator, num_samples: int, noise: float = 0.0) -> np.ndarray:
    """`num_samples` exact i.i.d. draws of the data: float32 (N, 2).

    x = c(T) + noise * xi, xi ~ N(0, I_2); noise = 0 puts every draw on the curve. Deterministic
    in `key` (a JAX PRNG key, typed or raw, or a numpy Generator, which is advanced).

    Args:
      key: JAX PRNG key or np.random.Generator.
      num_samples: N >= 0.
      noise: std of the isotropic Gaussian noise per coordinate, >= 0 (data units).
    """
    rng = _generator(key)
    points = CURVE.point(sample_t(rng, num_samples))
    if noise > 0:
        points = points + noise * rng.standard_normal(points.shape)
    return points.astype(np.float32)


def noise_of(data_config: Mapping[str, Any]) -> float:
    """``data.noise`` (default 0.0) as a float; ConfigError unless finite and >= 0."""
    value = data_config.get("noise", None)
    return checks.check_positive(0.0 if value is None else value, "config.data.noise",
                                 allow_zero=True, fix="the std of Gaussian noise around the "
                                 "curve; use 0.0 for points exactly on it")


def sampler(data_config: Mapping[str, Any]):
    """draw(key, n) -> float32 (n, 2) for ``data.noise``; validates the config."""
    noise = noise_of(data_config)
    return lambda key, num_samples: sample(key, num_samples, noise)


# ----------------------------------------------------------------------------------------------
# Exact metrics.

def arc_ks(t_values: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic sup_s |F_n(s) - F_S(s)| of arc-length coordinates.

    Exact: with sorted values and F = F_S continuous, the supremum is attained next to a
    sample, max_i max(i / n - F(s_(i)), F(s_(i)) - (i - 1) / n). s is increasing in t, so it is
    computed on t with F_T.

    Args: t_values: (n,) curve parameters in [0, 1] (e.g. `WavyCurve.project`'s t*), n >= 1.
    Returns: the statistic in [0, 1].
    """
    t_values = np.sort(np.asarray(t_values, np.float64).ravel())
    count = t_values.shape[0]
    if count == 0:
        raise ValueError("t_values must hold at least one value, got 0.")
    cdf = t_cdf(t_values)
    ranks = np.arange(1, count + 1)
    return float(max(np.max(ranks / count - cdf), np.max(cdf - (ranks - 1) / count)))


def arc_w1(t_values: np.ndarray, curve: WavyCurve = CURVE, grid_size: int = W1_GRID) -> float:
    """Wasserstein-1 distance between the empirical law of s(t_values) and the true law of S.

    W1 = integral over [0, L] of |F_n(s) - F_S(s)| ds (data units). The breakpoints are the
    samples and a uniform grid of `grid_size` cells in t, mapped to s exactly; between two
    breakpoints F_n is constant and F_S is replaced by its chord, whose |c - chord| integrates in
    closed form. The chord is off by at most l^2 max|p_S'| / 8 on a piece of arc length
    l <= h = max speed / grid_size, so the error is at most L h^2 max|p_S'| / 8:
    for CURVE (max|p_S'| = 3.0 per unit length^2, h = 4.2e-4) under 4e-7.

    Args:
      t_values: (n,) curve parameters in [0, 1], n >= 1.
      curve: the curve whose arc length is measured.
      grid_size: integration grid cells in t.
    Returns:
      W1 in data (arc-length) units.
    """
    t_values = np.asarray(t_values, np.float64).ravel()
    count = t_values.shape[0]
    if count == 0:
        raise ValueError("t_values must hold at least one value, got 0.")
    grid = np.linspace(0.0, 1.0, grid_size + 1)
    breaks = np.concatenate([grid, np.clip(t_values, 0.0, 1.0)])
    jumps = np.concatenate([np.zeros(grid_size + 1), np.ones(count)])
    order = np.argsort(breaks, kind="stable")
    breaks, jumps = breaks[order], jumps[order]
    level = np.cumsum(jumps)[:-1] / count  # F_n on [breaks_k, breaks_k+1]
    lengths = np.diff(curve.arc_length(breaks))
    cdf = t_cdf(breaks)
    above, below = level - cdf[:-1], level - cdf[1:]  # c - F at the piece's two ends
    same_sign = above * below >= 0
    magnitude = np.abs(above) + np.abs(below)
    area = np.where(same_sign, 0.5 * magnitude,
                    (above ** 2 + below ** 2) / (2 * np.where(magnitude > 0, magnitude, 1.0)))
    return float(np.sum(area * lengths))


def metrics(samples: np.ndarray, *, tolerance: float = ON_CURVE_TOLERANCE) -> Dict[str, float]:
    """Exact metrics of samples against the curve and the true law along it (module docstring).

    Non-finite rows count as infinitely far (curve_distance = inf, off the curve) and are left
    out of arc_w1 / arc_ks (NaN if no row is finite).

    Args:
      samples: (N, 2), N >= 1, data units.
      tolerance: on_curve_share counts distances <= tolerance.
    Returns:
      dict(curve_distance, on_curve_share, arc_w1, arc_ks) of floats; METRIC_GOALS gives
      whether each is to be minimised or maximised.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (N, 2) with N >= 1, got {samples.shape}.")
    t_star, distance = CURVE.project(samples)
    finite = np.isfinite(distance)
    on_curve = float(np.mean(distance <= tolerance))
    if not np.any(finite):
        return dict(curve_distance=math.inf, on_curve_share=on_curve, arc_w1=math.nan,
                    arc_ks=math.nan)
    return dict(curve_distance=float(np.mean(distance)), on_curve_share=on_curve,
                arc_w1=arc_w1(t_star[finite]), arc_ks=arc_ks(t_star[finite]))


def exact_metrics(data_config: Mapping[str, Any], samples: np.ndarray) -> Dict[str, float]:
    """The registry's hook: `metrics(samples)` (the metrics do not depend on ``data.noise``)."""
    del data_config
    return metrics(samples)


# ----------------------------------------------------------------------------------------------
# Pictures (matplotlib is imported only here, when called).

def plot_panel(ax, samples: Optional[np.ndarray], title: str = "", *,
               limits: Sequence[Sequence[float]] = PLOT_LIMITS, point_size: float = 4.0,
               alpha: float = 0.1, color: Optional[str] = None) -> None:
    """Draws the curve as a thin line under a scatter of `samples` on matplotlib axes `ax`.

    For panels side by side (truth, GAN, GEBM, EBM) call it once per axes, or use
    `save_panels`. Points outside `limits` are not shown. On a zero-thickness curve the points
    overlap, so the density along it shows as depth of colour: the default alpha 0.1 keeps the
    modes of ~2000 samples apart from the thin stretches between them.

    Args:
      ax: matplotlib Axes.
      samples: (N, 2) points in data units, or None for the curve alone.
      title: panel title.
      limits: ((x_low, x_high), (y_low, y_high)).
      point_size, alpha, color: scatter settings (color None: matplotlib's first colour).
    """
    line = CURVE.point(np.linspace(0.0, 1.0, 1001))
    ax.plot(line[:, 0], line[:, 1], color="0.6", linewidth=0.6, zorder=1)
    if samples is not None:
        samples = np.asarray(samples, np.float64)
        ax.scatter(samples[:, 0], samples[:, 1], s=point_size, alpha=alpha, color=color,
                   linewidths=0, zorder=2)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def save_panels(path: str, panels: Mapping[str, np.ndarray], title: str = "", *,
                limits: Sequence[Sequence[float]] = PLOT_LIMITS) -> str:
    """One `plot_panel` per entry of `panels` (name -> (N, 2) samples), in a row, as a PNG.

    Args:
      path: output file.
      panels: panel title -> samples, e.g. {'truth': ..., 'GAN': ..., 'GEBM': ..., 'EBM': ...}.
      title: figure title.
      limits: axis limits shared by every panel.
    Returns:
      `path`.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    width = limits[0][1] - limits[0][0]
    height = limits[1][1] - limits[1][0]
    panel_width = 4.0
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(panel_width * len(panels),
                                      panel_width * height / width + (1.3 if title else 1.0)))
    for ax, (name, samples) in zip(axes[0], panels.items()):
        plot_panel(ax, samples, name, limits=limits)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
