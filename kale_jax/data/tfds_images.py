"""TensorFlow Datasets image sets: cifar10, celeb_a, downsampled_imagenet/32x32, lsun/bedroom.

    info = get_info(config.data)                      # ImageSetInfo(name, (S, S, 3), 'image')
    batches = train_batches(config.data, batch_size=128, seed=0, start_step=step,
                            process_index=jax.process_index(), process_count=jax.process_count())
    test = eval_examples(config.data, split="test", num_examples=10_000)

Every example is decoded from its stored PNG/JPEG bytes (uint8 RGB), cropped and resized as the
table below says, and mapped to float32 in [-1, 1] by v / 127.5 - 1. Batches are NHWC numpy.

Data sets (``data.name`` is the tfds name):

    name                        train   held-out 'test'   sizes   preprocessing
    cifar10                     50k     test 10k          32      none (stored at 32x32)
    celeb_a                     163k    test 20k          64, 32  centre 140x140 crop of the
                                                                  218x178 aligned face, resize
    downsampled_imagenet/32x32  1.28M   validation 50k    32      none (stored at 32x32)
    lsun/bedroom                3.0M    validation 300    64, 32  resize the shorter side,
                                                                  centre crop

Held-out splits (``eval_examples(split='test')``) are the data sets' own, never training images.
The authors' code evaluated CelebA and ImageNet32 "test" on the training set; we do not.
* cifar10: the official 10k test batch.
* celeb_a: the official 'test' partition (list_eval_partition.txt, 19,962 images).
  'validation' (19,867) is left for model selection, so the reported number is not tuned on;
  ``tfds_images.eval_examples(split='validation')`` reads it explicitly.
* downsampled_imagenet/32x32: 'validation' (the ImageNet validation images); tfds has no test split.
* lsun/bedroom: 'validation', LSUN's only held-out set: 300 images. Metrics against 300 images
  (FID especially) have a large variance and bias; common practice in GAN papers is to compare
  with training images, which is available honestly named as ``split='train'``.

CelebA crop: 140x140 about the image centre, the protocol of Song & Ermon (2019, NCSN, section
5: "centre-cropped to 140x140, then resized") used by much later EBM/score-model work. It keeps the
whole face with little background. The tighter 108x108 crop of DCGAN-tensorflow cuts the chin and
forehead; it is available as ``data.crop_size = 108``. The authors' code instead resized the whole
178-wide image to 32 and centre-cropped 32x32 (much more background); our configs say so.

Resizing is bilinear with antialiasing (a triangle filter, so averages of neighbouring pixels:
values stay in range and downscaling does not alias); values are clipped to [-1, 1] only to absorb
float rounding.

Order, resume and processes (multi-host):
* Process p of P reads its own shard, ``tfds.split_for_jax_process(train_split, p, P)`` (disjoint,
  together the whole split, sizes differing by at most one), and yields batches of B // P
  examples. The global batch of step t is the concatenation over processes of their step-t
  batches (``jax.make_array_from_process_local_data`` over a 1-D mesh of all devices in
  process order gives each device a contiguous block of its process's rows, the layout the
  train step shards over).
* Within a process the shard's examples are read epoch after epoch; epoch e is the shard
  shuffled with a shuffle buffer (``data.shuffle_buffer`` encoded examples) seeded by
  (seed, e), and batch t is examples [t b, (t + 1) b) of the concatenated epochs (b = B // P,
  batches may straddle epochs). So the stream depends only on (data, seed, B, P, and the TF
  version's shuffle; TF's global seed is left unset), not on where a run started. Unlike the
  embedded sets, the global batch depends on P: each process shuffles its own shard.
* Resuming at ``start_step`` starts at epoch (start_step * b) // N and skips the first
  (start_step * b) % N examples of that epoch (N = shard size). Skipping reads encoded bytes
  through the shuffle buffer without decoding them: at most one epoch of the shard's files
  (ImageNet32 on one host: ~1.3M records, ~4 GB, about a minute; CIFAR-10: under a second).
* tfds writes examples in a hashed (pseudo-random) order when preparing a data set, so a
  buffer smaller than the split still mixes well; files are read in a fixed order.

Data location: ``data.data_dir`` (tfds' default, $TFDS_DATA_DIR or ~/tensorflow_datasets, when
empty). Nothing downloads while training: a data set that is not prepared raises
DatasetNotPreparedError with one line naming the data set, the directory and the command that
prepares it (``python -m experiments.prepare_data --config=CONFIG --config.data.data_dir=DIR
[--manual_dir=DIR]``, i.e. kale_jax.data.tfds_prepare, which needs no Apache Beam).
Manual downloads: with ``data.manual_dir`` set, `prepare` (and the printed command) takes the
source archives from there (file names as in tfds' checksums: CelebA's Google Drive quota and
image-net.org's login make this the only route for those two; LSUN also needs
``pip install tensorflow-io``). kale_jax.data.tfds_prepare lists every file and where it comes
from.

TensorFlow is imported on first use, never at import of kale_jax, and is hidden from GPUs
(``tf.config.set_visible_devices([], 'GPU')``) so it leaves accelerator memory to JAX.

Config keys (``config.data``; all but ``name`` optional):
    name            one of DATASETS
    data_dir        tfds data directory ('' or None: tfds' default)
    manual_dir      directory of manually downloaded source files (used by `prepare` only)
    image_size      output side S: 32 for cifar10 and ImageNet32; 64 (default) or 32 for
                    celeb_a and lsun/bedroom
    crop_size       celeb_a only: side of the centre crop before resizing (default 140)
    shuffle_buffer  encoded examples in the shuffle buffer (default per data set, below)
    prefetch        batches prepared ahead of the consumer (default 4)
    cache           keep this process's encoded shard in RAM after the first epoch (default False)
"""
from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping, NamedTuple, Optional

import numpy as np

from kale_jax import checks
from kale_jax.data import options
from kale_jax.errors import DataError

DEFAULT_PREFETCH = 4  # batches; a few steps of accelerator work (128x64x64x3 float32 is 6 MB)
DEFAULT_CELEBA_CROP = 140
CELEBA_SHAPE = (218, 178)  # (H, W) of tfds celeb_a's aligned-and-cropped images
_EVAL_CHUNK = 1000  # examples decoded per batch when building eval arrays
_EVAL_STREAM = 1  # folded into the seed for eval subsets: independent of training epochs' seeds
_INT31 = 2**31 - 1


class ImageSet(NamedTuple):
    """One tfds image data set and how we read it.

    tfds_name: the tfds builder name (also ``data.name``).
    train_split / eval_split: tfds splits used for training and as the held-out 'test' split.
    splits: every split tfds builds for it (``eval_examples`` accepts these names too).
    image_sizes: allowed ``data.image_size`` values; the first is the default.
    face_crop: default side of the centre crop applied before resizing (None: no crop).
    shuffle_buffer: default shuffle buffer, in encoded examples (RAM ~ buffer x bytes/example).
    manual_files: source files a user may place in ``manual_dir`` instead of downloading.
    """

    tfds_name: str
    train_split: str
    eval_split: str
    splits: tuple[str, ...]
    image_sizes: tuple[int, ...]
    face_crop: Optional[int]
    shuffle_buffer: int
    manual_files: tuple[str, ...]


# Buffers: PNG/JPEG bytes of ~2-3 KB (32x32 sets), ~8 KB (CelebA), ~20 KB (LSUN): <= ~0.4 GB.
IMAGE_SETS: dict[str, ImageSet] = {
    "cifar10": ImageSet(
        "cifar10", "train", "test", ("train", "test"), (32,), None, 50_000,
        ("cifar-10-binary.tar.gz",)),
    "celeb_a": ImageSet(
        "celeb_a", "train", "test", ("train", "validation", "test"), (64, 32),
        DEFAULT_CELEBA_CROP, 50_000,
        ("img_align_celeba.zip", "list_eval_partition.txt", "list_attr_celeba.txt",
         "list_landmarks_align_celeba.txt", "identity_CelebA.txt")),
    "downsampled_imagenet/32x32": ImageSet(
        "downsampled_imagenet/32x32", "train", "validation", ("train", "validation"), (32,),
        None, 50_000, ("train_32x32.tar", "valid_32x32.tar")),
    "lsun/bedroom": ImageSet(
        "lsun/bedroom", "train", "validation", ("train", "validation"), (64, 32), None, 20_000,
        ("bedroom_train_lmdb.zip", "bedroom_val_lmdb.zip")),
}
DATASETS: tuple[str, ...] = tuple(IMAGE_SETS)


class ImageSetInfo(NamedTuple):
    """Same fields as ``kale_jax.data.DatasetInfo``: name, per-example (S, S, 3), 'image'."""

    name: str
    shape: tuple[int, ...]
    kind: str


class DatasetNotPreparedError(DataError):
    """The tfds data set has not been downloaded and prepared in the data directory."""


# --------------------------------------------------------------------------------- config


def image_set(data_config: Mapping[str, Any]) -> ImageSet:
    """The table entry of ``data.name``; ValueError if it is not one of DATASETS."""
    name = data_config.get("name", None)
    if name not in IMAGE_SETS:
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}.")
    return IMAGE_SETS[name]


def image_size(data_config: Mapping[str, Any]) -> int:
    """``data.image_size``, validated against the data set's allowed sizes."""
    spec = image_set(data_config)
    return int(options.choice(data_config, "image_size", spec.image_sizes[0], spec.image_sizes))


def crop_size(data_config: Mapping[str, Any]) -> Optional[int]:
    """Side of the centre crop before resizing (celeb_a: ``data.crop_size``, default 140)."""
    spec = image_set(data_config)
    if spec.face_crop is None:
        return None
    return options.integer(data_config, "crop_size", spec.face_crop, minimum=1,
                           maximum=min(CELEBA_SHAPE),
                           fix=f"celeb_a images are {CELEBA_SHAPE[0]}x{CELEBA_SHAPE[1]}")


def _int_option(data_config: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    return options.integer(data_config, key, default, minimum=minimum)


def _bool_option(data_config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(data_config, key, default)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"data.{key} must be True or False, got {value!r}.")
    return bool(value)


def _dir_option(data_config: Mapping[str, Any], key: str) -> Optional[str]:
    value = data_config.get(key, None)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"data.{key} must be a directory path (str) or empty, got {value!r}.")
    return value


def get_info(data_config: Mapping[str, Any]) -> ImageSetInfo:
    """Name, per-example shape (S, S, 3) and kind 'image'; validates the data keys. No I/O."""
    spec = image_set(data_config)
    size = image_size(data_config)
    crop_size(data_config)
    _int_option(data_config, "shuffle_buffer", spec.shuffle_buffer, 1)
    _int_option(data_config, "prefetch", DEFAULT_PREFETCH, 0)
    _bool_option(data_config, "cache", False)
    _dir_option(data_config, "data_dir")
    _dir_option(data_config, "manual_dir")
    return ImageSetInfo(spec.tfds_name, (size, size, 3), "image")


# ----------------------------------------------------------------------- tensorflow setup

_TF_LOCK = threading.Lock()
_TF_CONFIGURED = False


def _tensorflow():
    """TensorFlow, imported on first use and hidden from GPUs (JAX owns accelerator memory)."""
    global _TF_CONFIGURED
    import tensorflow as tf

    with _TF_LOCK:
        if not _TF_CONFIGURED:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                # TF's devices were initialised before us (by the caller's own TF code); hiding
                # is then impossible, and only matters if TF actually sees a GPU.
                if tf.config.get_visible_devices("GPU"):
                    from absl import logging

                    logging.warning("TensorFlow was initialised before kale_jax could hide "
                                    "the GPUs from it; it may reserve accelerator memory.")
            _TF_CONFIGURED = True
    return tf


def _tfds():
    _tensorflow()
    import tensorflow_datasets as tfds

    return tfds


# ------------------------------------------------------------------------------- reading


def _builder(data_config: Mapping[str, Any]):
    spec = image_set(data_config)
    return _tfds().builder(spec.tfds_name, data_dir=_dir_option(data_config, "data_dir"))


def prepare_command(data_config: Mapping[str, Any], data_dir: str) -> str:
    """The shell command that prepares the data set into `data_dir` (experiments.prepare_data;
    run from the repository root). `--manual_dir` is named when ``data.manual_dir`` is set or
    the set's files must be downloaded by hand (CelebA, ImageNet 32x32)."""
    from kale_jax.data import tfds_prepare  # pylint: disable=g-import-not-at-top
    spec = image_set(data_config)
    config_file = tfds_prepare.CONFIG_FILES[spec.tfds_name]
    command = (f"python -m experiments.prepare_data --config={config_file} "
               f"--config.data.data_dir={data_dir}")
    manual_dir = _dir_option(data_config, "manual_dir")
    if manual_dir is not None:
        command += f" --manual_dir={manual_dir}"
    elif spec.tfds_name in tfds_prepare.MANUAL_ONLY:
        command += " --manual_dir=DIR"
    return command


def _not_prepared_message(data_config: Mapping[str, Any], builder) -> str:
    from kale_jax.data import tfds_prepare  # pylint: disable=g-import-not-at-top
    spec = image_set(data_config)
    root = str(builder.data_dir_root)
    return (f"Dataset '{spec.tfds_name}' is not prepared in data_dir '{root}' (no "
            f"{builder.data_dir}); nothing downloads while training: prepare it once with "
            f"`{prepare_command(data_config, root)}`; it reads "
            f"{', '.join(spec.manual_files)} from --manual_dir, "
            + ("which must hold them (downloaded by hand; the command says from where)."
               if spec.tfds_name in tfds_prepare.MANUAL_ONLY else
               "or downloads what is not there."))


def prepare(data_config: Mapping[str, Any]) -> None:
    """Download (or take from ``data.manual_dir``) and prepare the data set in ``data.data_dir``.

    Run once, before training (the training pipeline never downloads). No checks and no plan:
    kale_jax.data.tfds_prepare.prepare (what `prepare_command` runs) checks the source files
    and the network first. Statistics are not computed (tfds' optional dataset statistics).
    """
    tfds = _tfds()
    builder = _builder(data_config)
    manual_dir = _dir_option(data_config, "manual_dir")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP))


def _encoded_images(data_config: Mapping[str, Any], split):
    """tf.data.Dataset of this split's encoded image bytes (scalar tf.string), in file order.

    `split` is a tfds split name or sub-split (e.g. a `tfds.split_for_jax_process` result).
    Raises DatasetNotPreparedError if the data set is not prepared.
    """
    tfds = _tfds()
    builder = _builder(data_config)
    decoders = tfds.decode.PartialDecoding(
        {"image": True}, decoders={"image": tfds.decode.SkipDecoding()})
    # No tfds auto-cache (``data.cache`` decides) and no prefetch (ours comes after batching).
    read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=True)
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                                     read_config=read_config)
    except AssertionError as error:
        # tfds' own check in as_dataset: the version directory of the data set is missing.
        # (Asked after the fact so that tfds.testing.mock_data, which serves data for builders
        # that have no files, is honoured.)
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(_not_prepared_message(data_config, builder)) from error
    return dataset.map(lambda example: example["image"])


def _num_examples(dataset) -> int:
    """Number of elements of a finite dataset (tfds asserts it; counted if unknown)."""
    tf = _tensorflow()
    cardinality = int(dataset.cardinality())
    if cardinality >= 0:
        return cardinality
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("expected a finite split, got an infinite dataset.")
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


# ------------------------------------------------------------------------- preprocessing


def _centre_crop(image, side: int):
    tf = _tensorflow()
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    return tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2,
                                         side, side)


def _resize_shorter_side(image, side: int):
    """Scale (H, W, C) float so that min(H, W) == side (aspect kept); unchanged if already so."""
    tf = _tensorflow()
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    shorter = tf.minimum(height, width)

    def resized():
        scale = tf.cast(side, tf.float32) / tf.cast(shorter, tf.float32)
        new_height = tf.maximum(side, tf.cast(tf.round(tf.cast(height, tf.float32) * scale),
                                              tf.int32))
        new_width = tf.maximum(side, tf.cast(tf.round(tf.cast(width, tf.float32) * scale),
                                             tf.int32))
        return tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear",
                               antialias=True)

    return tf.cond(tf.equal(shorter, side), lambda: image, resized)


def _preprocess_fn(data_config: Mapping[str, Any]):
    """encoded bytes -> float32 (S, S, 3) in [-1, 1]: decode, [centre crop], resize, crop."""
    tf = _tensorflow()
    size = image_size(data_config)
    crop = crop_size(data_config)

    def preprocess(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if crop is not None:
            image = _centre_crop(image, crop)
        image = _centre_crop(_resize_shorter_side(image, size), size)
        image = tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)
        return tf.ensure_shape(image, (size, size, 3))

    return preprocess


def _shuffle_seed(seed: int, stream, epoch):
    """A 31-bit shuffle seed: a stateless hash of (seed, stream, epoch); epoch may be a tensor."""
    tf = _tensorflow()
    key = tf.stack([tf.constant(seed, tf.int64),
                    tf.constant(stream, tf.int64) * (2**32) + tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], seed=key, minval=0, maxval=_INT31, dtype=tf.int64)


def _deterministic(dataset):
    tf = _tensorflow()
    dataset_options = tf.data.Options()
    dataset_options.deterministic = True
    return dataset.with_options(dataset_options)


# --------------------------------------------------------------------------- public API


def train_batches(data_config: Mapping[str, Any], *, batch_size: int, seed: int,
                  start_step: int = 0, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[np.ndarray]:
    """Infinite training batches of this process: float32 (batch_size // P, S, S, 3) in [-1, 1].

    Args:
        data_config: ``config.data`` (keys in the module docstring).
        batch_size: global batch size B, divisible by P.
        seed: with (data, B, P) it alone fixes every batch (see "Order" in the module docstring).
        start_step: first step to yield: a run resumed here sees the batches an uninterrupted
            run would (costs reading up to one epoch of this shard's encoded bytes).
        process_index, process_count: this process p of P (default: jax.process_index() and
            jax.process_count()). Process p reads only its shard of the train split.

    Raises:
        ValueError for bad arguments or config keys; DatasetNotPreparedError (a ValueError) if
        the data set is not prepared in ``data.data_dir``. Both at call time, not at first next().
    """
    spec = image_set(data_config)
    get_info(data_config)
    process_index, process_count = _process(process_index, process_count)
    for name, value, minimum in (("batch_size", batch_size, 1), ("seed", seed, 0),
                                 ("start_step", start_step, 0)):
        checks.check_int(value, name, minimum=minimum)
    if batch_size % process_count:
        raise ValueError(f"batch_size must be divisible by process_count={process_count}, "
                         f"got {batch_size}.")
    local_batch = batch_size // process_count
    tf = _tensorflow()
    tfds = _tfds()

    shard = tfds.split_for_jax_process(spec.train_split, process_index=process_index,
                                       process_count=process_count)
    encoded = _encoded_images(data_config, shard)
    num_local = _num_examples(encoded)
    if num_local == 0:
        raise ValueError(f"process {process_index} of {process_count} got no examples of "
                         f"'{spec.tfds_name}' split {spec.train_split!r}.")
    if _bool_option(data_config, "cache", False):
        encoded = encoded.cache()
    buffer = min(_int_option(data_config, "shuffle_buffer", spec.shuffle_buffer, 1), num_local)
    first_epoch, offset = divmod(int(start_step) * local_batch, num_local)

    def epoch(index):
        return encoded.shuffle(buffer, seed=_shuffle_seed(int(seed), 0, index),
                               reshuffle_each_iteration=False)

    stream = tf.data.Dataset.counter(start=first_epoch).flat_map(epoch)
    stream = stream.skip(offset)  # before decoding: skipped examples are never decoded
    stream = stream.map(_preprocess_fn(data_config), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
    stream = stream.batch(local_batch, drop_remainder=True)
    prefetch = _int_option(data_config, "prefetch", DEFAULT_PREFETCH, 0)
    if prefetch:
        stream = stream.prefetch(prefetch)
    return _deterministic(stream).as_numpy_iterator()


def eval_split(data_config: Mapping[str, Any], split: str) -> str:
    """The tfds split read for `split`: 'train', 'test' (the held-out split) or a tfds name."""
    spec = image_set(data_config)
    if split == "train":
        return spec.train_split
    if split == "test":
        return spec.eval_split
    if split in spec.splits:
        return split
    raise ValueError(f"split must be one of {('train', 'test') + spec.splits} for "
                     f"'{spec.tfds_name}', got {split!r}.")


def eval_examples(data_config: Mapping[str, Any], *, split: str = "test", num_examples: int,
                  seed: int = 0) -> np.ndarray:
    """`num_examples` examples of `split`: float32 (num_examples, S, S, 3) in [-1, 1].

    'test' is the data set's held-out split (module docstring); the whole split is read by
    every process. The subset and its order are fixed by `seed`: the split's examples shuffled
    with a buffer of min(split size, ``data.shuffle_buffer``) (a uniform subset whenever the
    split fits in the buffer, as all held-out splits do by default), first `num_examples` kept.
    Seeds are independent of the training order's. ValueError if the split is smaller.
    """
    spec = image_set(data_config)
    size = get_info(data_config).shape[0]
    tfds_split = eval_split(data_config, split)
    for name, value, minimum in (("num_examples", num_examples, 1), ("seed", seed, 0)):
        checks.check_int(value, name, minimum=minimum)
    tf = _tensorflow()
    encoded = _encoded_images(data_config, tfds_split)
    available = _num_examples(encoded)
    if num_examples > available:
        raise ValueError(f"num_examples must be <= {available} (the size of "
                         f"'{spec.tfds_name}' split {tfds_split!r}), got {num_examples}.")
    buffer = min(available, _int_option(data_config, "shuffle_buffer", spec.shuffle_buffer, 1))
    dataset = encoded.shuffle(buffer, seed=_shuffle_seed(int(seed), _EVAL_STREAM, 0),
                              reshuffle_each_iteration=False).take(num_examples)
    dataset = dataset.map(_preprocess_fn(data_config), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True).batch(_EVAL_CHUNK)
    out = np.empty((num_examples, size, size, 3), np.float32)
    filled = 0
    for chunk in _deterministic(dataset).as_numpy_iterator():
        out[filled:filled + chunk.shape[0]] = chunk
        filled += chunk.shape[0]
    if filled != num_examples:  # the split shrank between counting and reading
        raise RuntimeError(f"read {filled} examples of '{spec.tfds_name}' {tfds_split!r}, "
                           f"expected {num_examples}.")
    return out


def _process(process_index: Optional[int], process_count: Optional[int]) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    for name, value, minimum in (("process_count", process_count, 1),
                                 ("process_index", process_index, 0)):
        checks.check_int(value, name, minimum=minimum)
    if process_index >= process_count:
        raise ValueError(f"process_index must be < process_count={process_count}, "
                         f"got {process_index}.")
    return int(process_index), int(process_count)


__all__ = ["DATASETS", "DatasetNotPreparedError", "IMAGE_SETS", "ImageSet", "ImageSetInfo",
           "eval_examples", "eval_split", "get_info", "image_size", "prepare", "prepare_command",
           "train_batches"]
