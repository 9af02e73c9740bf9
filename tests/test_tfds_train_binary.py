"""End to end: `experiments.train` on configs/celeba.py, made tiny, with tfds mocked.

The binary runs in a subprocess through tests/tfds_mock_train.py, which enters
`tfds.testing.mock_data` and then runs experiments.train's main with the same flags, so the
real config file, flag parsing, tfds image pipeline, training loop, evaluation and checkpointing
all run; only the data are random images served by tfds' mock (with CelebA's real features:
218x178 JPEGs, centre-cropped and resized by our pipeline).

Cost: ~85 s of CPU on 2 cores, almost all XLA compilation of the SN-ResNet pair (state
initialisation, one training iteration, the evaluation); the run itself is 2 base steps.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from kale_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 2

TINY = [
    "--config.data.image_size=32",
    "--config.data.shuffle_buffer=16",
    "--config.model.latent_dim=8",
    "--config.model.generator_kwargs.width=4",
    "--config.model.energy_kwargs.width=4",
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.batch_size=8",
    "--config.train.n_critic=1",
    "--config.train.n_critic_warmup=1",  # = n_critic: one compiled iteration, not two
    "--config.train.warmup_every=2",
    "--config.train.a_init_batches=1",
    "--config.train.log_every=1",
    f"--config.train.eval_every={NUM_STEPS}",
    f"--config.train.checkpoint_every={NUM_STEPS}",
    "--config.sampler.num_steps=1",
    "--config.eval.num_heldout=16",
    "--config.eval.num_samples=8",
]


def test_train_binary_on_mocked_celeba(tmp_path):
    assert "celeb_a" in data.DATASETS, (
        "kale_jax.data does not register the tfds image sets (kale_jax.data.tfds_images)")
    workdir = str(tmp_path / "run")
    command = [sys.executable, os.path.join(ROOT, "tests", "tfds_mock_train.py"),
               "--config=configs/celeba.py", f"--workdir={workdir}"] + TINY
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in records]
    assert sorted(set(steps)) == list(range(1, NUM_STEPS + 1))  # log_every=1
    final = {k: v for r in records if r["step"] == NUM_STEPS for k, v in r.items()}
    for key in ("kale_heldout", "mmd_base", "mmd_gebm"):  # the evaluation at the last step
        assert key in final and np.isfinite(final[key]), (key, final)

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert config["data"]["name"] == "celeb_a" and config["data"]["image_size"] == 32
    assert config["model"]["generator"] == "resnet" and config["model"]["energy"] == "resnet"

    checkpoints = os.listdir(os.path.join(workdir, "checkpoints"))
    assert any(name.rstrip("/").endswith(str(NUM_STEPS)) for name in checkpoints), checkpoints
    samples = sorted(os.listdir(os.path.join(workdir, "samples")))
    assert f"base_{NUM_STEPS:07d}.png" in samples and f"gebm_{NUM_STEPS:07d}.png" in samples
