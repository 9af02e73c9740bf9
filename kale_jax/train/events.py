"""TensorBoard event files without TensorFlow: scalars, PNG images and text.

The `tensorboard` package (install extra `[tensorboard]`) does the work: its protocol buffers
(`tensorboard.compat.proto`: Event, Summary, TensorProto) and its TFRecord framing with CRC-32C
(`tensorboard.summary.writer.record_writer.RecordWriter`). We do not use its `EventFileWriter`:
it opens files through `tensorboard.compat.tf`, which imports TensorFlow (about 5 s) when
TensorFlow is installed (it is, for tfds), and it writes from a background thread, so a failed
write (a full disk) would surface late, not in the call that caused it.

* scalars: `Summary.Value.simple_value` (TensorBoard's scalars dashboard);
* images: `Summary.Value.image` holding the PNG bytes as written to disk (images dashboard);
* text: a string tensor with the text plugin's metadata (text dashboard; Markdown).

Nothing is imported from `tensorboard` until a writer is made; `available()` says whether it can
be.
"""
from __future__ import annotations

import os
import socket
import struct
import time

FILE_VERSION = "brain.Event:2"
INSTALL_HINT = "pip install -e '.[tensorboard]'"


def available() -> bool:
    """Whether the `tensorboard` package imports (event files can be written)."""
    try:
        # pylint: disable=g-import-not-at-top,unused-import
        from tensorboard.compat.proto import event_pb2  # noqa: F401
        from tensorboard.summary.writer import record_writer  # noqa: F401
    except ImportError:
        return False
    return True


def png_size(png: bytes) -> tuple:
    """(height, width) in pixels from a PNG's IHDR chunk.

    Raises:
      ValueError: `png` is not a PNG file's bytes.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width


def _png_channels(png: bytes) -> int:
    """Channels of a PNG from its IHDR colour type (a palette counts as RGB)."""
    return {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(png[25], 3)


def scalar_value(tag: str, value: float):
    """A `Summary.Value` holding the scalar `value` (stored as float32) under `tag`."""
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))


def image_value(tag: str, png: bytes):
    """A `Summary.Value` holding the PNG file bytes `png` as an image under `tag`."""
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    height, width = png_size(png)
    image = summary_pb2.Summary.Image(height=height, width=width,
                                      colorspace=_png_channels(png), encoded_image_string=png)
    return summary_pb2.Summary.Value(tag=tag, image=image)


def text_value(tag: str, text: str):
    """A `Summary.Value` holding Markdown `text` (a scalar string tensor) for the text plugin."""
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    string_val=[text.encode("utf-8")])
    return summary_pb2.Summary.Value(
        tag=tag, tensor=tensor,
        metadata=metadata.create_summary_metadata(display_name=tag, description=""))


class EventWriter:
    """Appends summaries to a new event file in `logdir`
    (events.out.tfevents.<time>.<host>.<pid>.<n>; TensorBoard reads every such file).

    Each event is one unbuffered write made in the calling thread, so TensorBoard sees it at
    once, a crash loses nothing written and a failed write raises where it happened. Not
    thread-safe. Needs the `tensorboard` package (see `available`).

    Args:
      logdir: directory of the event file (created if missing).
    """

    _count = 0

    def __init__(self, logdir: str):
        # pylint: disable=g-import-not-at-top
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
        self._event_pb2 = event_pb2
        os.makedirs(logdir, exist_ok=True)
        EventWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{EventWriter._count}")
        self.path = os.path.join(logdir, name)
        self._records = RecordWriter(open(self.path, "ab", buffering=0))
        self._closed = False
        self._write(event_pb2.Event(wall_time=time.time(), step=0, file_version=FILE_VERSION))

    def _write(self, event) -> None:
        if self._closed:
            raise ValueError(f"write to the closed event file {self.path}")
        self._records.write(event.SerializeToString())

    def write_values(self, step: int, values: list) -> None:
        """One event at `step` holding the `Summary.Value`s `values` (see `scalar_value` etc.)."""
        from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                          summary=summary_pb2.Summary(value=values)))

    def scalars(self, step: int, scalars: dict) -> None:
        """Scalars {tag: number} at `step` (one event)."""
        self.write_values(step, [scalar_value(k, v) for k, v in scalars.items()])

    def image(self, step: int, tag: str, png: bytes) -> None:
        """A PNG image (its file's bytes) at `step`."""
        self.write_values(step, [image_value(tag, png)])

    def text(self, step: int, tag: str, text: str) -> None:
        """Markdown text at `step`."""
        self.write_values(step, [text_value(tag, text)])

    def flush(self) -> None:
        """Flushes the file (writes are unbuffered; kept for the writer interface)."""
        if not self._closed:
            self._records.flush()

    def close(self) -> None:
        """Flushes and closes the file (closed even when the flush fails)."""
        if not self._closed:
            self._closed = True
            try:
                self._records.flush()
            finally:
                self._records.close()
