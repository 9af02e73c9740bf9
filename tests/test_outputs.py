"""Pictures of kale_jax.train.outputs: scatter projections with labelled, titled panels."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from kale_jax.train import outputs  # pylint: disable=wrong-import-position


def _sets(dim, n=300):
    rng = np.random.RandomState(0)
    return {"data (held out)": rng.randn(n, dim), "base": 1.5 * rng.randn(n, dim),
            "GEBM": 0.5 * rng.randn(n, dim) + 1.0}


def _notes():
    return {"data (held out)": "MMD² noise 4e-05", "base": outputs.mmd_note(1.2e-3, 4e-5),
            "GEBM": outputs.mmd_note(6e-4, 4e-5)}


def test_mmd_note_shows_value_and_noise():
    assert outputs.mmd_note(1.234e-3, 4.1e-5) == "MMD² 1.2e-03 (noise 4e-05)"
    assert outputs.mmd_note(1.234e-3) == "MMD² 1.2e-03"


@pytest.mark.parametrize("dim, rows", [(2, 1), (3, 3)])
def test_scatter_panels_are_2d_labelled_titled_and_share_limits(dim, rows):
    fig = outputs.scatter_figure(_sets(dim), "t", notes=_notes())
    try:
        axes = np.asarray(fig.axes).reshape(rows, 3)
        for ax in axes.ravel():
            assert ax.name == "rectilinear"  # 2-D projections, no 3-D axes
            assert ax.get_xlabel().startswith("x") and ax.get_ylabel().startswith("x")
            assert "MMD" in ax.get_title()
        expected_pairs = [("x1", "x2")] if dim == 2 else [("x1", "x2"), ("x1", "x3"), ("x2", "x3")]
        for row, pair in zip(axes, expected_pairs):
            assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in row} == {pair}
            # data / base / GEBM on the same limits, so differences in spread are visible
            assert len({ax.get_xlim() for ax in row}) == 1
            assert len({ax.get_ylim() for ax in row}) == 1
        assert "(noise 4e-05)" in axes[0, 2].get_title()
        # The GEBM set (0.5 std around 1) fits inside limits made for the widest set (1.5 std).
        low, high = axes[0, 0].get_xlim()
        assert low < -3.0 and high > 3.0
    finally:
        plt.close(fig)


def test_scatter_limits_ignore_nonfinite_points_and_bad_shapes_fail():
    sets = _sets(2)
    sets["GEBM"][:5] = np.nan
    sets["base"][5] = np.inf
    fig = outputs.scatter_figure(sets)
    try:
        assert all(np.isfinite(ax.get_xlim()).all() for ax in fig.axes)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match=r"\(N, 2\) or all \(N, 3\)"):
        outputs.scatter_figure({"a": np.zeros((4, 2)), "b": np.zeros((4, 3))})


def test_save_scatter_writes_a_png(tmp_path):
    path = os.path.join(tmp_path, "samples", "scatter_0000001.png")
    outputs.save_scatter(path, _sets(3), title="sphere3d", notes=_notes())
    with Image.open(path) as image:
        width, height = image.size
    assert width >= 600 and height >= 600  # 3 x 3 panels
