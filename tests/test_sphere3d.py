"""Tests for kale_jax.data.sphere3d: the true base and energy, the bound L, and exact sampling."""
import math

import jax
import numpy as np

from kale_jax.data import sphere3d

L = sphere3d.ENERGY_LOWER_BOUND
M = np.array([[0.1, -1.0, -1.0], [-1.0, 0.1, -1.0], [-1.0, -1.0, 0.1]])


def numpy_base(z):
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return np.sum((u + u**4) ** 2, axis=-1, keepdims=True) * u


def numpy_energy(x):
    hidden = x @ (M / 1.9).T
    return np.where(hidden >= 0, hidden, 0.1 * hidden) @ (np.ones(3) / math.sqrt(3))


def test_constants_have_the_stated_norms():
    # M = 1.1 I - 1 1^T: eigenvalues -1.9 (on 1), 1.1, 1.1, so W = M / 1.9.
    np.testing.assert_allclose(sphere3d.W, M / 1.9, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(sphere3d.W, 2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sphere3d.C, np.full(3, 3**-0.5), rtol=1e-12)


def test_base_matches_formula():
    z = np.random.default_rng(0).standard_normal((1000, 3))
    np.testing.assert_allclose(sphere3d.base(z.astype(np.float32)), numpy_base(z),
                               rtol=1e-5, atol=1e-5)
    # Hand values: u = e1 gives r = |(2, 0, 0)|^2 = 4; u = -e1 gives r = |(0, 0, 0)|^2 = 0;
    # u = (1, 1, 0)/sqrt(2): u + u^4 = (a, a, 0) with a = 1/sqrt(2) + 1/4, r = 2 a^2.
    a = 2**-0.5 + 0.25
    expected = np.array([[4.0, 0, 0], [0, 0, 0], [2 * a * a * 2**-0.5, 2 * a * a * 2**-0.5, 0]])
    z_hand = np.array([[2.0, 0, 0], [-0.5, 0, 0], [3.0, 3.0, 0]])
    np.testing.assert_allclose(sphere3d.base(z_hand), expected, rtol=1e-6, atol=1e-6)
    # Only the direction of z matters.
    np.testing.assert_allclose(sphere3d.base(7.5 * z), sphere3d.base(z), rtol=1e-5, atol=1e-6)


def test_energy_matches_formula():
    x = 3 * np.random.default_rng(1).standard_normal((1000, 3))
    np.testing.assert_allclose(sphere3d.energy(x.astype(np.float32)), numpy_energy(x),
                               rtol=1e-5, atol=1e-6)
    # Hand value: W e1 = (0.1, -1, -1)/1.9 -> leaky (0.1, -0.1, -0.1)/1.9 -> c. = -0.1/(1.9 sqrt3).
    np.testing.assert_allclose(sphere3d.energy(np.array([1, 0, 0])),  # integer input too
                               -0.1 / (1.9 * math.sqrt(3)), rtol=1e-6)


def _energy_on_sphere(u):
    return numpy_energy(numpy_base(u))


def _cube_face_points(face, a, b):
    """Points (a, b) of cube face `face` (axis face // 2, sign by parity) as (n, 3) vectors."""
    axis, parity = divmod(face, 2)
    others = [i for i in range(3) if i != axis]
    points = np.empty(a.shape + (3,))
    points[:, axis] = 1.0 - 2.0 * parity
    points[:, others[0]] = a
    points[:, others[1]] = b
    return points


def certify_lower_bound(bound, initial_cells=16, max_cells=4_000_000):
    """True if E(B(u)) >= bound for every unit vector u, proven by branch and bound.

    Cells are squares of half-width h on the 6 faces of the cube [-1, 1]^3, radially projected to
    the sphere. Radial projection onto the unit sphere is 1-Lipschitz outside the unit ball (it
    is the nearest-point map onto the ball), so a cell's image lies within chord distance
    rho = sqrt(2) h of its centre's image u_c, and the chord from u_c to any u of the cell lies
    in B(u_c, rho) and in the unit ball. On it, with x(v) = r(v) v, r(v) = sum_i (v_i + v_i^4)^2:
      ||dx/dv|| <= r(v) + |v| |grad r(v)|, grad r(v)_i = 2 (v_i + v_i^4)(1 + 4 v_i^3),
    and |v_i| <= a_i = min(1, |u_c,i| + rho) bounds |v_i + v_i^4| <= a_i + a_i^4 and
    |1 + 4 v_i^3| <= 1 + 4 a_i^3; also r <= 4 on the unit ball. E is 1-Lipschitz in x, so
    E(x(u)) >= E(x(u_c)) - K rho. A cell whose bound is >= `bound` is done; one whose centre
    is below `bound` disproves it; the rest are split in four.
    """
    half_width = 1.0 / initial_cells
    grid = -1.0 + half_width * (2 * np.arange(initial_cells) + 1)
    first, second = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
    cells = [(first, second) for _ in range(6)]
    while any(a.size for a, _ in cells):
        rho = math.sqrt(2.0) * half_width
        next_cells = []
        for face, (a, b) in enumerate(cells):
            points = _cube_face_points(face, a, b)
            u = points / np.linalg.norm(points, axis=-1, keepdims=True)
            centre_energy = _energy_on_sphere(u)
            if np.any(centre_energy < bound):
                return False
            reach = np.minimum(1.0, np.abs(u) + rho)
            moved = reach + reach**4
            lipschitz = (2.0 * np.sqrt(np.sum(moved**2 * (1 + 4 * reach**3) ** 2, axis=-1))
                         + np.minimum(4.0, np.sum(moved**2, axis=-1)))
            open_cells = centre_energy - lipschitz * rho < bound
            a, b = a[open_cells], b[open_cells]
            q = half_width / 2  # the four children's centres are offset by (+-q, +-q)
            next_cells.append((np.concatenate([a - q, a - q, a + q, a + q]),
                               np.concatenate([b - q, b + q, b - q, b + q])))
        cells = next_cells
        half_width /= 2
        if sum(a.size for a, _ in cells) > max_cells:
            return False
    return True


def test_lower_bound_is_certified_and_tight():
    assert certify_lower_bound(L)
    # The certificate can fail: a bound above the infimum (-0.26655...) is refuted.
    assert not certify_lower_bound(-0.2665)
    # Tight: E at the (numerically found) minimiser direction is within 0.004 of L.
    u_star = np.array([[math.sin(0.21089) / math.sqrt(2), math.sin(0.21089) / math.sqrt(2),
                        math.cos(0.21089)]])
    assert 0.0 < _energy_on_sphere(u_star)[0] - L < 0.004


def test_lower_bound_holds_on_base_samples():
    z = jax.random.normal(jax.random.key(0), (1_000_000, 3))
    energies = np.asarray(sphere3d.energy(sphere3d.base(z)))
    assert energies.min() >= L
    assert np.abs(np.asarray(sphere3d.base(z))).max() <= 4.0 + 1e-5  # |x| <= max r = 4


def test_sample_is_deterministic_and_fresh():
    first = sphere3d.sample(jax.random.key(3), 500)
    assert first.shape == (500, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, sphere3d.sample(jax.random.key(3), 500))
    assert not np.allclose(first, sphere3d.sample(jax.random.key(4), 500))
    # A prefix of a larger request: rows are the first N accepted proposals in order.
    np.testing.assert_array_equal(sphere3d.sample(jax.random.key(3), 200), first[:200])
    assert sphere3d.sample(jax.random.key(3), 0).shape == (0, 3)
    # All rows are filled with points of the surface (r(u) u for u = x/|x|).
    x = np.asarray(first, np.float64)
    np.testing.assert_allclose(x, numpy_base(x), rtol=1e-4, atol=1e-5)


def test_rejection_sampler_is_exact():
    """Moments of the rejection sampler's draws equal those of the GEBM P = exp(-E) G / Z.

    The reference is self-normalised importance sampling from the base with weights
    w_i = exp(-E(y_i)) / sum_j exp(-E(y_j)), y_i ~ G. Standard errors: for the sampler's mean,
    s_f / sqrt(n) (i.i.d. draws); for the IS estimate mu = sum_i w_i f_i, the delta-method
    sqrt(sum_i w_i^2 (f_i - mu)^2). Each difference must lie within 4 combined standard errors
    (two-sided false-alarm rate 6e-5 per statistic, 7 statistics).
    """
    num_exact, num_base = 40_000, 400_000
    exact = np.asarray(sphere3d.sample(jax.random.key(11), num_exact), np.float64)
    proposals = np.asarray(sphere3d.base(jax.random.normal(jax.random.key(12), (num_base, 3))),
                           np.float64)

    def statistics(x):  # (n, 7): coordinates, squared coordinates, energy
        return np.concatenate([x, x**2, numpy_energy(x)[:, None]], axis=1)

    f_exact, f_base = statistics(exact), statistics(proposals)
    log_w = -numpy_energy(proposals)
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    mean_exact = f_exact.mean(axis=0)
    se_exact = f_exact.std(axis=0, ddof=1) / math.sqrt(num_exact)
    mean_is = weights @ f_base
    se_is = np.sqrt(weights**2 @ (f_base - mean_is) ** 2)
    tolerance = 4.0 * np.sqrt(se_exact**2 + se_is**2)
    np.testing.assert_array_less(np.abs(mean_exact - mean_is), tolerance)
    # The comparison has power: the unweighted base differs from P by several tolerances
    # in its mean energy (P tilts G toward low energy).
    assert f_base[:, 6].mean() - mean_is[6] > 5 * tolerance[6]

