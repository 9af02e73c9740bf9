"""Tests of kale_jax.data.tfds_prepare: preparing a tfds image set offline, without Beam.

End to end through tfds' real celeb_a builder: a tiny CelebA (6 faces, 2 per split) in the
official layout (img_align_celeba.zip holding img_align_celeba/00000k.jpg, and the four text
files) is put in a manual directory; tfds' DownloadManager reads the files from there, its
builder writes every split, and our training reader (tfds_images.eval_examples) reads the test
split back. What tfds cannot do offline with fake files is pass its registered checksums (sizes
and SHA-256 of the real 1.4 GB archive), so:
* unpatched, the fake files must be refused by our size check, before anything is written;
* with tfds' registry (the builder class's `url_infos`) replaced by the fake files' own sizes and
  SHA-256 sums, the real build runs; one wrong SHA-256 there must give tfds'
  NonMatchingChecksumError as our one-line checksum error.
No network is simulated with proxies pointing at a closed local port.
"""
import dataclasses
import io
import os
import socket
import zipfile
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as celeb_a_tfds

from kale_jax.data import tfds_images, tfds_prepare
from kale_jax.errors import DataError

PARTITION = [0, 0, 1, 1, 2, 2]  # image k + 1: train, train, validation, validation, test, test


def _red(k: int) -> int:
    return 20 + 40 * k  # each face is one flat colour; its red channel identifies it


def write_fake_celeba(manual: str) -> None:
    """The five CelebA source files, official names and layout, for len(PARTITION) images."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    os.makedirs(manual, exist_ok=True)
    names = [f"{k + 1:06d}.jpg" for k in range(len(PARTITION))]
    with zipfile.ZipFile(os.path.join(manual, "img_align_celeba.zip"), "w") as archive:
        for k, name in enumerate(names):
            buffer = io.BytesIO()
            Image.new("RGB", (178, 218), (_red(k), 128, 60)).save(buffer, "JPEG", quality=95)
            archive.writestr(f"img_align_celeba/{name}", buffer.getvalue())

    def table(filename, headings, value):
        with open(os.path.join(manual, filename), "w") as f:
            f.write(f"{len(names)}\n{' '.join(headings)}\n")
            f.writelines(f"{n} {' '.join([value] * len(headings))}\n" for n in names)

    table("list_attr_celeba.txt", celeb_a_tfds.ATTR_HEADINGS, "-1")
    table("list_landmarks_align_celeba.txt", celeb_a_tfds.LANDMARK_HEADINGS, "70")
    with open(os.path.join(manual, "list_eval_partition.txt"), "w") as f:
        f.writelines(f"{n} {p}\n" for n, p in zip(names, PARTITION))
    with open(os.path.join(manual, "identity_CelebA.txt"), "w") as f:
        f.writelines(f"{n} {k + 1}\n" for k, n in enumerate(names))


def _registry_of(manual: str, wrong_checksum: str = "") -> dict:
    """tfds' celeb_a url_infos with the fake files' sizes and SHA-256 (one wrong if asked)."""
    real = tfds.builder_cls("celeb_a").url_infos
    out = {}
    for url, info in real.items():
        mine = checksums.compute_url_info(os.path.join(manual, info.filename))
        if info.filename == wrong_checksum:
            mine = dataclasses.replace(mine, checksum="0" * 64)
        out[url] = dataclasses.replace(mine, filename=info.filename)
    return out


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("celeba_files"))
    write_fake_celeba(path)
    return path


def test_fake_files_fail_the_size_check_before_anything_is_written(manual, tmp_path):
    data = {"name": "celeb_a", "data_dir": str(tmp_path / "tfds")}
    steps = tfds_prepare.plan(data, manual_dir=manual)
    assert steps.splits == ("train", "test") and not steps.prepared
    assert [f.filename for f in steps.files] == list(tfds_images.IMAGE_SETS["celeb_a"].manual_files)
    assert all(f.path == os.path.join(manual, f.filename) for f in steps.files)
    zip_file = steps.files[0]
    assert zip_file.size == 1443490838 and "Google Drive" in zip_file.origin
    lines = tfds_prepare.describe(steps)
    assert f"  read      {zip_file.path} (1.34 GiB)" in lines
    with pytest.raises(DataError) as raised:
        tfds_prepare.prepare(data, manual_dir=manual, echo=lambda line: None)
    message = str(raised.value)
    size = os.path.getsize(zip_file.path)
    assert "\n" not in message
    assert f"{zip_file.path} has {size} bytes but tfds expects 1443490838" in message
    assert not os.path.exists(tmp_path / "tfds" / "celeb_a")


def test_wrong_checksum_is_one_line(manual, tmp_path):
    data = {"name": "celeb_a", "data_dir": str(tmp_path / "tfds")}
    registry = _registry_of(manual, wrong_checksum="list_eval_partition.txt")
    with mock.patch.object(tfds.builder_cls("celeb_a"), "url_infos", registry):
        with pytest.raises(DataError) as raised:
            tfds_prepare.prepare(data, manual_dir=manual, echo=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("checksum mismatch for 'celeb_a'")
    assert "list_eval_partition" in message or "0B7EVK8r0v71pY0NSMzRuSXJEVkk" in message


def test_tiny_celeba_is_built_by_the_real_builder_and_read_back(manual, tmp_path):
    data = {"name": "celeb_a", "data_dir": str(tmp_path / "tfds"), "image_size": 32}
    lines = []
    with mock.patch.object(tfds.builder_cls("celeb_a"), "url_infos", _registry_of(manual)):
        splits = tfds_prepare.prepare(data, manual_dir=manual, echo=lines.append)
    assert splits == {"train": 2, "validation": 2, "test": 2}
    assert lines[0].startswith("Data set 'celeb_a' for configs/celeba.py: trains on split "
                               "'train', evaluates on 'test'")
    assert lines[-1].startswith("Prepared 'celeb_a' in ")
    # Our reader sees exactly the test partition's faces (red = 20 + 40 k, k = 4, 5), after the
    # crop and resize of a flat image (flat again; JPEG moves a flat colour by at most a level
    # or two, 2 / 127.5 in [-1, 1]).
    test = tfds_images.eval_examples(data, split="test", num_examples=2)
    assert test.shape == (2, 32, 32, 3)
    red = np.sort(test[..., 0].mean(axis=(1, 2)))
    np.testing.assert_allclose(red, [_red(4) / 127.5 - 1, _red(5) / 127.5 - 1], atol=3 / 127.5)
    np.testing.assert_allclose(test[..., 1], 128 / 127.5 - 1, atol=3 / 127.5)
    # Prepared: a second run reads nothing (no registry patch needed) and reports the same splits.
    again = []
    assert tfds_prepare.prepare(data, manual_dir=manual, echo=again.append) == splits
    assert again[-1].startswith("Already prepared in ")


def test_missing_manual_files_are_each_named(manual, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "list_eval_partition.txt").write_bytes(
        open(os.path.join(manual, "list_eval_partition.txt"), "rb").read())
    data = {"name": "celeb_a", "data_dir": str(tmp_path / "tfds")}
    with pytest.raises(DataError) as raised:
        tfds_prepare.prepare(data, manual_dir=str(partial), echo=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message and f"missing from --manual_dir={partial}" in message
    for name in ("img_align_celeba.zip (1.34 GiB, folder Img, Align&Cropped Images), ",
                 "list_attr_celeba.txt (25.5 MiB, folder Anno)",
                 "list_landmarks_align_celeba.txt", "identity_CelebA.txt",
                 ", from the CelebA Google Drive linked from https://mmlab.ie.cuhk.edu.hk/"):
        assert name in message
    assert "list_eval_partition.txt" not in message
    with pytest.raises(DataError, match=r"no --manual_dir was given; download img_align_celeba"):
        tfds_prepare.prepare(data, echo=lambda line: None)


def test_no_network_is_one_line(tmp_path, monkeypatch):
    """cifar10 is downloaded when not in a manual directory; with every request sent to a proxy
    on a closed local port the check fails at once, naming the host and the manual route."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    data = {"name": "cifar10", "data_dir": str(tmp_path / "tfds")}
    lines = []
    with pytest.raises(DataError) as raised:
        tfds_prepare.prepare(data, echo=lines.append)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("no network: cannot reach www.cs.toronto.edu to download "
                              "cifar-10-binary.tar.gz (162 MiB) for 'cifar10' (")
    assert "Error)" in message  # requests' exception: ProxyError (a ConnectionError)
    assert "--manual_dir=DIR" in message
    assert "  download  cifar-10-binary.tar.gz (162 MiB) from https://www.cs.toronto.edu/" \
           "~kriz/cifar-10-binary.tar.gz" in lines
