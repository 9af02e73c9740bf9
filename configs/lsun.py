"""LSUN bedroom at 64x64, the authors' SN-ResNet pair, the paper's recipe.

    python -m experiments.train --config=configs/lsun.py --workdir=/tmp/kale_lsun \
        --config.data.data_dir=/path/to/tensorflow_datasets

Prepare the data first (nothing downloads during training; reading LSUN's LMDB files needs
`pip install tensorflow-io` at preparation time only):
    python -m experiments.prepare_data --config=configs/lsun.py \
        --config.data.data_dir=/path/to/tensorflow_datasets [--manual_dir=DIR]
(downloads 43 GiB, or reads bedroom_train_lmdb.zip and bedroom_val_lmdb.zip from DIR).

Images: shorter side resized to data.image_size, then the centre square (as the authors' code
did, with torchvision's Resize + CenterCrop). Held-out data (eval.*): LSUN's 'validation' set,
its only held-out images: just 300, so evaluation here uses at most 300 (eval.num_heldout is
set to 300) and the MMD / KALE numbers have a large variance. The usual GAN practice of
comparing with training images is available by name, eval_examples(split='train'), never
under the name 'test'.

Where the values come from: the recipe, sampler and cadence are configs/cifar10.py's (its
docstring says which values come from the paper, the authors' code or us). Specific to LSUN:
  Ours: 64x64 resolution (the authors' code used 32x32: --config.data.image_size=32, which
    is also the size their networks were built for; at 64 their ResNet pair gets one more
    residual stage, kale_jax/networks/authors.py) and a
    shuffle buffer of 20k encoded images (tfds_images' default for LSUN, ~0.4 GB per host).
"""
import ml_collections

from configs import cifar10, default


def get_config() -> ml_collections.ConfigDict:
    # model.dtype: float32, from cifar10.paper_recipe (the paper's numbers; bfloat16 for TPU
    # speed is --config.model.dtype=bfloat16, see the comment there).
    config = cifar10.paper_recipe(default.get_config())
    config.data.name = "lsun/bedroom"
    config.data.image_size = 64
    config.eval.num_heldout = 300
    return config
