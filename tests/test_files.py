"""Tests of kale_jax.data.files (safe .npy / .npz loading); pickles: tests/test_reliability.py."""
import numpy as np
import pytest

from kale_jax.data import files
from kale_jax.errors import DataError


def test_plain_arrays_load_from_npz_and_npy(tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.arange(3.0), sigma=np.eye(3))
    arrays = files.load_arrays(str(tmp_path / "stats.npz"), keys=("mu", "sigma"))
    assert sorted(arrays) == ["mu", "sigma"]
    np.testing.assert_array_equal(arrays["sigma"], np.eye(3))
    np.save(tmp_path / "one.npy", np.arange(4, dtype=np.int16))
    one = files.load_arrays(str(tmp_path / "one.npy"))
    assert one["array"].dtype == np.int16 and one["array"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("name, keep", [("cut.npz", 0.5), ("cut.npy", 0.9)])
def test_truncated_files_are_one_line_data_errors(tmp_path, name, keep):
    data = np.arange(64.0)
    np.savez(tmp_path / "whole.npz", x=data)
    np.save(tmp_path / "whole.npy", data)
    whole = (tmp_path / ("whole" + name[-4:])).read_bytes()
    (tmp_path / name).write_bytes(whole[:int(len(whole) * keep)])
    with pytest.raises(DataError, match=r"Inception weights .* is truncated or not a .npy/.npz "
                                        r"file") as error:
        files.load_arrays(str(tmp_path / name), what="Inception weights")
    assert "\n" not in str(error.value)


def test_missing_file_and_missing_keys(tmp_path):
    with pytest.raises(DataError, match=r"statistics .*absent.npz does not exist"):
        files.load_arrays(str(tmp_path / "absent.npz"), what="statistics")
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2))
    with pytest.raises(DataError, match=r"lacks arrays \['sigma'\] \(it holds \['mu'\]\)"):
        files.load_arrays(str(tmp_path / "stats.npz"), keys=("mu", "sigma"))
