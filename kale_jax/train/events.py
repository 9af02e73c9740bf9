"""TensorBoard event files written without TensorFlow: scalars, PNG images and text.

An event file is a sequence of TFRecords (length, masked CRC32C of the length, an `Event`
protocol buffer, its masked CRC32C); the first event names the format ('brain.Event:2'). The few
protocol-buffer messages needed (Event, Summary, Summary.Value, Summary.Image, SummaryMetadata,
TensorProto) are encoded here by hand, so writing events costs neither TensorFlow's import
(seconds) nor a dependency: TensorBoard reads the files (`pip install -e '.[tensorboard]'`).

* scalars: `Summary.Value.simple_value` (TensorBoard's scalars dashboard);
* images: `Summary.Value.image` holding the PNG bytes as written to disk (images dashboard);
* text: a string tensor with the 'text' plugin's metadata (text dashboard; Markdown).

Field numbers are those of tensorflow/core/framework/summary.proto, tensor.proto,
tensor_shape.proto and tensorflow/core/util/event.proto.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Optional

FILE_VERSION = "brain.Event:2"
_DT_STRING = 7  # tensorflow.DataType
_DATA_CLASS_TENSOR = 2  # tensorboard SummaryMetadata.DataClass


# ------------------------------------------------------------------------------ CRC32C
def _crc32c_table() -> tuple:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected Castagnoli
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord uses it (crc32c(b'123456789') = 0xE3069283)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (mod 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ------------------------------------------------------------------------------ protobuf
def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _bytes_field(field: int, value) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _key(field, 2) + _varint(len(value)) + value


def _double_field(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def _event(step: int, wall_time: float, *, summary: bytes = b"",
           file_version: Optional[str] = None) -> bytes:
    """Event: wall_time = 1 (double), step = 2, file_version = 3, summary = 5."""
    out = _double_field(1, wall_time) + _int_field(2, step)
    if file_version is not None:
        out += _bytes_field(3, file_version)
    else:
        out += _bytes_field(5, summary)
    return out


def scalar_value(tag: str, value: float) -> bytes:
    """Summary.Value: tag = 1, simple_value = 2 (float32)."""
    return _bytes_field(1, tag) + _float_field(2, float(value))


def png_size(png: bytes) -> tuple:
    """(height, width) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width


def image_value(tag: str, png: bytes) -> bytes:
    """Summary.Value: tag = 1, image = 4 (Summary.Image: height = 1, width = 2,
    colorspace = 3, encoded_image_string = 4)."""
    height, width = png_size(png)
    colour_type = png[25]  # 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type, 3)
    image = (_int_field(1, height) + _int_field(2, width) + _int_field(3, channels)
             + _bytes_field(4, png))
    return _bytes_field(1, tag) + _bytes_field(4, image)


def text_value(tag: str, text: str) -> bytes:
    """Summary.Value: tag = 1, tensor = 8 (TensorProto: dtype = 1, tensor_shape = 2 (empty:
    a scalar), string_val = 8), metadata = 9 (SummaryMetadata: plugin_data = 1 (PluginData:
    plugin_name = 1), data_class = 4)."""
    tensor = _int_field(1, _DT_STRING) + _bytes_field(2, b"") + _bytes_field(8, text)
    metadata = _bytes_field(1, _bytes_field(1, "text")) + _int_field(4, _DATA_CLASS_TENSOR)
    return _bytes_field(1, tag) + _bytes_field(8, tensor) + _bytes_field(9, metadata)


# ------------------------------------------------------------------------------ the writer
class EventWriter:
    """Appends summaries to a new event file in `logdir`
    (events.out.tfevents.<time>.<host>.<pid>.<n>; TensorBoard reads every such file).

    Each event is one unbuffered write, so TensorBoard sees it at once and a crash loses
    nothing written. Not thread-safe.

    Args:
      logdir: directory of the event file (created if missing).
    """

    _count = 0

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        EventWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{EventWriter._count}")
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab", buffering=0)
        self._write(_event(0, time.time(), file_version=FILE_VERSION))

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"write to the closed event file {self.path}")
        self._file.write(tfrecord(event))

    def write_values(self, step: int, values: list) -> None:
        """One event at `step` holding the encoded Summary.Values `values`."""
        summary = b"".join(_bytes_field(1, v) for v in values)
        self._write(_event(step, time.time(), summary=summary))

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
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            finally:
                self._file.close()
                self._file = None
