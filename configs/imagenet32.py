"""ImageNet 32x32 (tfds downsampled_imagenet/32x32), the authors' SN-ResNet pair, the paper's
recipe.

    python -m experiments.train --config=configs/imagenet32.py --workdir=/tmp/kale_imagenet32 \
        --config.data.data_dir=/path/to/tensorflow_datasets

Prepare the data first (nothing downloads during training):
    python -m experiments.prepare_data --config=configs/imagenet32.py \
        --config.data.data_dir=/path/to/tensorflow_datasets --manual_dir=DIR
with train_32x32.tar and valid_32x32.tar (from image-net.org, which needs a login) in DIR.

Held-out data (eval.*): the 50k 'validation' images (tfds has no test split). The authors' code
evaluated ImageNet32 "test" on its training set; we do not.

Where the values come from: everything is configs/cifar10.py's recipe, sampler and cadence
(its docstring says which values come from the paper, the authors' code or us); the data are
stored at 32x32 and used as they are.
"""
import ml_collections

from configs import cifar10, default


def get_config() -> ml_collections.ConfigDict:
    # model.dtype: float32, from cifar10.paper_recipe (the paper's numbers; bfloat16 for TPU
    # speed is --config.model.dtype=bfloat16, see the comment there).
    config = cifar10.paper_recipe(default.get_config())
    config.data.name = "downsampled_imagenet/32x32"
    config.data.image_size = 32
    return config
