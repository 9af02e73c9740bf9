"""Runs the experiments.train binary with TensorFlow Datasets mocked (for end-to-end tests).

    python tests/tfds_mock_train.py --config=configs/celeba.py --workdir=DIR [--config.x=...]

Same flags as `python -m experiments.train`. Inside `tfds.testing.mock_data` every tfds data set
reads as prepared and yields random examples with the builder's real features (MOCK_EXAMPLES
per split), so the image pipelines run without any downloaded data. The mock lives here, in
the test tree, so that neither the library nor the binary carries a test-only switch.
"""
import os
import sys

# Run from anywhere: the repository root (experiments/, configs/, kale_jax/) goes on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from experiments import train  # noqa: E402  (defines the binary's flags)

MOCK_EXAMPLES = 32

if __name__ == "__main__":
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        app.run(train.main)
