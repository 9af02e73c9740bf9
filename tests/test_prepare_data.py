"""Tests of the experiments.prepare_data binary (the library, kale_jax.data.tfds_prepare, has its
own tests): run as a subprocess from the repository root, a user error is one line on stderr
and exit status 2, after the plan was printed."""
import os
import subprocess
import sys

from helpers import one_error_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_missing_manual_files_exit_2_with_one_line(env, tmp_path):
    manual = tmp_path / "celeba_files"
    manual.mkdir()
    (manual / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    data_dir = tmp_path / "tfds"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.prepare_data", "--config=configs/celeba.py",
         f"--config.data.data_dir={data_dir}", f"--manual_dir={manual}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert f"missing from --manual_dir={manual}" in line
    for name in ("img_align_celeba.zip", "list_eval_partition.txt", "list_attr_celeba.txt",
                 "list_landmarks_align_celeba.txt"):
        assert name in line
    # The plan came first: the set, its splits and each file with its size.
    assert "Data set 'celeb_a' for configs/celeba.py: trains on split 'train', evaluates on " \
           "'test'." in result.stdout
    assert f"  read      {manual / 'identity_CelebA.txt'} (3.27 MiB)" in result.stdout
    assert "  missing   img_align_celeba.zip (1.34 GiB): get it from the CelebA Google Drive" \
        in result.stdout
    assert not (data_dir / "celeb_a").exists()


def test_main_is_the_entry_point():
    """kale-prepare = experiments.prepare_data:main (pyproject.toml); importing defines no flag."""
    from experiments import prepare_data  # pylint: disable=g-import-not-at-top
    assert callable(prepare_data.main)
    assert "manual_dir" not in prepare_data.FLAGS
