"""kale_jax.train.events: TensorBoard event files through the `tensorboard` package, without
TensorFlow, read back with TensorBoard's own EventAccumulator (the reader its dashboards use; it
checks both CRCs of every record and parses the protocol buffers)."""
import glob
import io
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kale_jax.train import events, outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tensorboard = pytest.mark.skipif(not events.available(),
                                       reason="pip install -e '.[test]' installs tensorboard")
CONFIG_TEXT = "    {\n      \"seed\": 0\n    }"


def _png(height, width, mode):
    """PNG bytes of a grey ('L') or 'RGB' image of the given size."""
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _read(path):
    """TensorBoard's EventAccumulator over the event file `path`, every event kept."""
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(
        path, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_png_size_reads_the_header_and_refuses_other_bytes():
    assert events.png_size(_png(5, 7, "L")) == (5, 7)
    with pytest.raises(ValueError, match="not a PNG"):
        events.png_size(b"GIF89a" + bytes(30))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An event file with scalars at two steps, a grey and an RGB image, and a text."""
    if not events.available():
        pytest.skip("pip install -e '.[test]' installs tensorboard")
    logdir = str(tmp_path_factory.mktemp("events"))
    grey, rgb = _png(5, 7, "L"), _png(4, 6, "RGB")
    writer = events.EventWriter(logdir)
    writer.scalars(3, {"energy_loss": -0.25, "mmd_gebm": 1e-3})
    writer.scalars(6, {"energy_loss": 0.5})
    writer.image(6, "samples/base", grey)
    writer.image(6, "samples/scatter", rgb)
    writer.text(0, "config", CONFIG_TEXT)
    writer.close()
    return writer.path, {"grey": grey, "rgb": rgb}


def test_tensorboard_reads_back_every_summary(written):
    path, pngs = written
    accumulator = _read(path)
    assert accumulator.file_version == 2.0  # 'brain.Event:2'
    scalars = {(e.step, tag): e.value for tag in accumulator.Tags()["scalars"]
               for e in accumulator.Scalars(tag)}
    # 1e-3 is stored as float32: relative error below 2^-24.
    assert scalars == {(3, "energy_loss"): -0.25, (3, "mmd_gebm"): pytest.approx(1e-3, rel=1e-7),
                       (6, "energy_loss"): 0.5}
    (base,), (scatter,) = accumulator.Images("samples/base"), accumulator.Images("samples/scatter")
    assert (base.step, base.height, base.width) == (6, 5, 7)
    assert (scatter.step, scatter.height, scatter.width) == (6, 4, 6)
    assert base.encoded_image_string == pngs["grey"]
    assert scatter.encoded_image_string == pngs["rgb"]
    (text,) = accumulator.Tensors("config")
    assert text.step == 0 and list(text.tensor_proto.string_val) == [CONFIG_TEXT.encode()]
    assert accumulator.SummaryMetadata("config").plugin_data.plugin_name == "text"
    assert text.wall_time > 1e9


@needs_tensorboard
def test_a_closed_writer_refuses_to_write(tmp_path):
    writer = events.EventWriter(str(tmp_path))
    writer.close()
    writer.close()  # twice is fine
    with pytest.raises(ValueError, match="closed event file"):
        writer.scalars(1, {"loss": 1.0})


@needs_tensorboard
def test_metric_writer_adds_pictures_of_the_step_and_the_config(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    png = _png(2, 3, "L")
    for name in ("base_0000003.png", "gebm_0000003.png", "scatter_0000006.png"):
        (samples / name).write_bytes(png)
    writer = outputs.MetricWriter(str(tmp_path))
    writer.write_config(0, '{"seed": 0}')
    assert writer.write_pictures(3, str(samples)) == ["samples/base", "samples/gebm"]
    assert writer.write_pictures(4, str(samples)) == []
    writer.write(3, {"energy_loss": 1.5, "note": "nan"})
    writer.close()
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    accumulator = _read(path)
    assert accumulator.Tags()["scalars"] == ["energy_loss"]  # 'note' is not a number
    assert [(e.step, e.value) for e in accumulator.Scalars("energy_loss")] == [(3, 1.5)]
    assert sorted(accumulator.Tags()["images"]) == ["samples/base", "samples/gebm"]
    assert [(e.step, e.height, e.width) for e in accumulator.Images("samples/gebm")] == [(3, 2, 3)]
    (text,) = accumulator.Tensors("config")
    assert text.tensor_proto.string_val == [b'    {"seed": 0}']
    assert outputs.MetricWriter(str(tmp_path / "off"), tensorboard=False).write_pictures(
        3, str(samples)) == []


def test_without_tensorboard_a_run_logs_the_install_once_and_writes_no_events(
        tmp_path, monkeypatch, caplog):
    # As if not installed: importing tensorboard or any of its (maybe cached) modules fails.
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard"] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)
    assert not events.available()
    with caplog.at_level(logging.INFO):
        writer = outputs.MetricWriter(str(tmp_path))
        writer.write_config(0, "{}")
        writer.write(1, {"loss": 1.0})
        assert writer.write_pictures(1, str(tmp_path)) == []
        writer.close()
    lines = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(lines) == 1 and "pip install -e '.[tensorboard]'" in lines[0], lines
    assert not glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert outputs.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]


@needs_tensorboard
def test_writing_events_does_not_import_tensorflow(tmp_path):
    """A run with TensorBoard on does not pay TensorFlow's import (seconds)."""
    code = ("import sys; from kale_jax.train import outputs; "
            f"w = outputs.MetricWriter({str(tmp_path)!r}); w.write(1, {{'loss': 1.0}}); "
            "w.write_config(0, '{}'); w.close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
