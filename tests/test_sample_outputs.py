"""Pictures of experiments.sample (experiments.sample_outputs): metrics.png, chains.gif/png."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.container  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from experiments import sample_outputs  # pylint: disable=wrong-import-position
from kale_jax import data  # pylint: disable=wrong-import-position

STEPS = np.arange(0, 301, 50)  # 7 records


def _curves():
    rng = np.random.RandomState(0)
    return {"energy": list(rng.randn(7)), "acceptance": [float("nan")] + list(rng.rand(6)),
            "mmd": list(np.linspace(2e-3, 3e-4, 7)), "kid_test": list(rng.rand(7)),
            "kid_test_se": list(0.1 * rng.rand(7))}


def _chains(chains=64, dim=3):
    """(records, chains, dim) random-walk paths."""
    rng = np.random.RandomState(1)
    return np.cumsum(0.3 * rng.randn(len(STEPS), chains, dim), axis=0)


def test_metrics_panels_have_ylabels_error_bars_and_the_noise_band():
    fig = sample_outputs.curves_figure(STEPS, _curves(), "t", noise={"mmd": 1e-4})
    try:
        axes = {ax.get_title(): ax for ax in fig.axes}
        assert len(axes) == 4  # kid_test_se is drawn as kid_test's error bars, not a panel
        for ax in fig.axes:
            assert ax.get_ylabel() and ax.get_xlabel() == "MCMC step (0 = base)"
        kid = axes[sample_outputs.METRIC_LABELS["kid_test"][0]]
        mmd = axes[sample_outputs.METRIC_LABELS["mmd"][0]]
        assert mmd.get_ylabel() == "MMD²"
        assert any(isinstance(c, matplotlib.container.ErrorbarContainer) for c in kid.containers)
        assert not mmd.containers  # no mmd_se: no error bars
        # The band [-noise, noise] of true-vs-true MMD², on the MMD panel only.
        bands = [p for p in mmd.patches if np.allclose(
            [p.get_extents().y0, p.get_extents().y1],
            mmd.transData.transform([[0, -1e-4], [0, 1e-4]])[:, 1])]
        assert len(bands) == 1
        assert not axes[sample_outputs.METRIC_LABELS["energy"][0]].patches
    finally:
        plt.close(fig)


def test_chain_frames_are_large_and_draw_fading_trails():
    gif = _chains()
    frames = sample_outputs.chain_frames(gif, STEPS)
    assert len(frames) == len(STEPS)
    assert all(f.shape == (480, 480, 3) and f.dtype == np.uint8 for f in frames)

    def trail_pixels(frame):  # trails are blue (0, 0, 0.6); points red, grid and text grey
        f = frame.astype(int)
        return int(np.sum((f[..., 2] - f[..., 0] > 40) & (f[..., 2] - f[..., 1] > 40)))

    assert trail_pixels(frames[0]) == 0  # no path yet at record 0
    assert trail_pixels(frames[1]) > 1000  # 64 segments
    assert trail_pixels(frames[4]) > trail_pixels(frames[1])  # 4 records of trail
    segments, ages = sample_outputs._trail_segments(gif, 6, 0, 1)
    assert segments.shape == (64 * sample_outputs.TRAIL_RECORDS, 2, 2)
    np.testing.assert_array_equal(segments[-64:, 1], gif[6, :, :2])  # newest ends at the chains
    assert np.all(ages[-64:] == 0) and ages.max() == sample_outputs.TRAIL_RECORDS - 1


def test_chains_still_has_a_path_per_chain_in_every_projection():
    fig = sample_outputs.chains_figure(_chains(chains=16), STEPS, "t")
    try:
        assert len(fig.axes) == 3  # x1-x2, x1-x3, x2-x3
        for ax in fig.axes:
            assert len(ax.lines) == 16
            assert ax.get_xlabel() and ax.get_ylabel()
    finally:
        plt.close(fig)


def test_write_pictures_for_3d_data(tmp_path):
    rng = np.random.RandomState(2)
    info = data.DatasetInfo(name="sphere3d", shape=(3,), kind="vector")
    grid = rng.randn(2, 200, 3)
    sample_outputs.write_pictures(str(tmp_path), info, grid, _chains(), STEPS, _curves(), "t",
                                  reference=rng.randn(200, 3), mmd_noise=1e-4)
    for name in ("scatter.png", "chains.png", "metrics.png"):
        assert os.path.getsize(os.path.join(tmp_path, name)) > 0
    with Image.open(os.path.join(tmp_path, "chains.gif")) as gif:
        assert gif.n_frames == len(STEPS) and min(gif.size) >= 400


def test_image_chains_gif_is_at_least_400_pixels(tmp_path):
    info = data.DatasetInfo(name="digits", shape=(8, 8, 1), kind="image")
    rng = np.random.RandomState(3)
    images = rng.uniform(-1, 1, (2, 16, 8, 8, 1))
    chains = rng.uniform(-1, 1, (3, 16, 8, 8, 1))
    sample_outputs.write_pictures(str(tmp_path), info, images, chains, STEPS[:3],
                                  {"energy": [0.0, 1.0, 2.0]}, "t", reference=None)
    with Image.open(os.path.join(tmp_path, "chains.gif")) as gif:
        assert gif.n_frames == 3 and min(gif.size) >= 400
