"""kale_jax.train.events: TensorBoard event files without TensorFlow, checked against the CRC-32C
test vectors and read back with TensorFlow's own TFRecord reader and Event parser (an
independent decoder: it verifies both CRCs of every record and the protobuf encoding)."""
import glob
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kale_jax.train import events, outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_crc32c_matches_the_published_check_values():
    # The CRC catalogue's check value and RFC 3720 (iSCSI) B.4 vectors.
    assert events.crc32c(b"123456789") == 0xE3069283
    assert events.crc32c(bytes(32)) == 0x8A9136AA
    assert events.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert events.crc32c(bytes(range(32))) == 0x46DD794E
    assert events.crc32c(b"") == 0


def _png(height, width, mode):
    """PNG bytes of a grey ('L') or 'RGB' image of the given size."""
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An event file with scalars at two steps, a grey and an RGB image, and a text."""
    logdir = str(tmp_path_factory.mktemp("events"))
    grey, rgb = _png(5, 7, "L"), _png(4, 6, "RGB")
    writer = events.EventWriter(logdir)
    writer.scalars(3, {"energy_loss": -0.25, "mmd_gebm": 1e-3})
    writer.scalars(6, {"energy_loss": 0.5})
    writer.image(6, "samples/base", grey)
    writer.image(6, "samples/scatter", rgb)
    writer.text(0, "config", "    {\n      \"seed\": 0\n    }")
    writer.close()
    return writer.path, {"grey": grey, "rgb": rgb}


def test_tensorflow_reads_back_every_summary(written):
    path, pngs = written
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
    # TFRecordDataset checks the masked CRCs of each record's length and data.
    records = [event_pb2.Event.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert records[0].file_version == "brain.Event:2"
    values = [(e.step, v) for e in records[1:] for v in e.summary.value]
    scalars = {(step, v.tag): v.simple_value for step, v in values if v.WhichOneof("value")
               == "simple_value"}
    assert scalars == {(3, "energy_loss"): -0.25, (3, "mmd_gebm"): pytest.approx(1e-3),
                       (6, "energy_loss"): 0.5}
    images = {v.tag: v.image for _, v in values if v.HasField("image")}
    assert (images["samples/base"].height, images["samples/base"].width,
            images["samples/base"].colorspace) == (5, 7, 1)
    assert (images["samples/scatter"].height, images["samples/scatter"].width,
            images["samples/scatter"].colorspace) == (4, 6, 3)
    assert images["samples/base"].encoded_image_string == pngs["grey"]
    texts = [(step, v) for step, v in values if v.tag == "config"]
    assert len(texts) == 1 and texts[0][0] == 0
    text = texts[0][1]
    assert text.metadata.plugin_data.plugin_name == "text"
    assert tf.make_ndarray(text.tensor) == "    {\n      \"seed\": 0\n    }".encode()
    assert all(e.wall_time > 1e9 for e in records)


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
    content = open(path, "rb").read()
    assert content.count(png) == 2 and b"samples/gebm" in content and b"energy_loss" in content
    assert b'    {"seed": 0}' in content and b"note" not in content
    assert outputs.MetricWriter(str(tmp_path / "off"), tensorboard=False).write_pictures(
        3, str(samples)) == []


def test_writing_events_does_not_import_tensorflow(tmp_path):
    """The point of the module: a run with TensorBoard on no longer pays TensorFlow's import."""
    code = ("import sys; from kale_jax.train import outputs; "
            f"w = outputs.MetricWriter({str(tmp_path)!r}); w.write(1, {{'loss': 1.0}}); "
            "w.write_config(0, '{}'); w.close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
