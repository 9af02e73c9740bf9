"""CelebA at 64x64, the authors' SN-ResNet base and energy, the paper's training recipe.

    python -m experiments.train --config=configs/celeba.py --workdir=/tmp/kale_celeba \
        --config.data.data_dir=/path/to/tensorflow_datasets

Prepare the data first (nothing downloads during training):
    python -m experiments.prepare_data --config=configs/celeba.py \
        --config.data.data_dir=/path/to/tensorflow_datasets --manual_dir=DIR
with img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt,
list_landmarks_align_celeba.txt and identity_CelebA.txt from the CelebA Google Drive in DIR
(Google Drive refuses automatic downloads; kale_jax.data.tfds_prepare says where each file is).

Images: the 218x178 aligned faces, centre 140x140 crop (data.crop_size), resized to
data.image_size (see kale_jax.data.tfds_images). Held-out data (eval.*): the official 'test'
partition (19,962 images); 'validation' is left for model selection.

Where the values come from: the training recipe, the sampler and the cadence are those of
configs/cifar10.py (its docstring says which come from the paper, which from the authors' code
and which are ours). Specific to CelebA:
  Ours: 64x64 resolution and the 140x140 face crop. The authors' code (and so the paper's
    CelebA numbers) used 32x32: the whole 178-pixel-wide image resized to 32 and centre-cropped,
    i.e. more background; --config.data.image_size=32 gives the paper's resolution (with our
    crop). The ResNet networks take the image size from the data; the authors' networks
    exist at 32x32 only, and at 64 ours add one residual stage to theirs
    (kale_jax/networks/authors.py), so image_size=32 is also what reruns their networks.
  The authors' code evaluated CelebA "test" on its training split; we use the test partition.
"""
import ml_collections

from configs import cifar10, default


def get_config() -> ml_collections.ConfigDict:
    # model.dtype: float32, from cifar10.paper_recipe (the paper's numbers; bfloat16 for TPU
    # speed is --config.model.dtype=bfloat16, see the comment there).
    config = cifar10.paper_recipe(default.get_config())
    config.data.name = "celeb_a"
    config.data.image_size = 64
    config.data.crop_size = 140
    return config
