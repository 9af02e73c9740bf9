"""The FID Inception network in Flax Linen: the 2015-12-05 TensorFlow graph as pytorch-fid ports it.

FID and KID are only comparable across papers when computed with the network of the original FID
code: Inception v3 as in TensorFlow's inception-2015-12-05 graph. pytorch-fid ports it to torch as
torchvision's Inception v3 with four kinds of patched blocks; this module is the same architecture
in Flax (written from the architecture's description, not translated code):

* input: images (N, H, W, C) in [-1, 1] (this library's convention; pytorch-fid takes [0, 1] and
  maps x -> 2x - 1, so the network sees the same values), C = 1 is repeated to 3 channels; values
  are clipped to [-1, 1]; resized bilinearly to 299 x 299 with half-pixel centres and no
  antialiasing (torch.nn.functional.interpolate(mode='bilinear', align_corners=False));
* every convolution is a BasicConv: conv without bias, BatchNorm (eps 1e-3, running statistics),
  ReLU;
* the average-pool branches of the A, C and first E blocks (Mixed_5b-d, Mixed_6b-e, Mixed_7b)
  average over the valid (unpadded) inputs only (TensorFlow's pooling; count_include_pad=False);
* the pool branch of the last E block (Mixed_7c) is a 3x3 *max* pool (a quirk of the graph);
* features: the global average pool of Mixed_7c, 2048 values per image (the "pool3" features).

Parameters are never downloaded: `load_variables` reads an .npz made by
`python -m experiments.convert_inception` from pytorch-fid's weights file (see
third_party/inception/README.md). Module names follow the torch state dict (Conv2d_1a_3x3,
Mixed_5b.branch1x1, ...), and the .npz keys are the Flax variable paths joined by '/', e.g.
'params/Mixed_5b/branch1x1/conv/kernel' (HWIO) or 'batch_stats/Mixed_5b/branch1x1/bn/mean'.
"""
from __future__ import annotations

import functools
import os
import zipfile
from typing import Any, Dict, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kale_jax.errors import DataError

Array = jax.Array
INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3
Padding = Tuple[Tuple[int, int], Tuple[int, int]]


def _pad(h: int, w: int) -> Padding:
    return ((h, h), (w, w))


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (inference) -> ReLU."""
    features: int
    kernel_size: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Conv(self.features, self.kernel_size, self.strides, padding=self.padding,
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_valid(x: Array) -> Array:
    """3x3 stride-1 average over the unpadded neighbours (TensorFlow's SAME average pool)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b-d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; 224 + pool_features out."""
    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_valid(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2; 768 channels out."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = BasicConv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-e (17x17): factorised 7x7 branches with channels_7x7 inner width; 768 out."""
    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_pad(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_valid(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2; 1280 channels out."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b/7c (8x8): split 1x3 / 3x1 branches; pool 'avg' (7b) or 'max' (7c); 2048 out."""
    pool: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
            BasicConv(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "max":
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
        else:
            pooled = _avg_pool_valid(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInception(nn.Module):
    """Images (N, H, W, 1 or 3) in [-1, 1] -> pool3 features (N, 2048), see the module docstring.

    Attributes:
      resize: resize inputs to 299 x 299 (as FID does); False feeds them at their own size
        (at least 75 x 75).
    """
    resize: bool = True

    @nn.compact
    def __call__(self, images: Array) -> Array:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (N, H, W, 1 or 3), got shape {images.shape}")
        x = jnp.clip(images.astype(jnp.float32), -1.0, 1.0)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear",
                                 antialias=False)
        x = BasicConv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------------------ variables / .npz
@functools.lru_cache(maxsize=None)
def _expected_shapes() -> Dict[str, Tuple[int, ...]]:
    """Flat '/'-joined variable paths of FIDInception -> shapes (traced, nothing computed)."""
    abstract = jax.eval_shape(FIDInception().init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    return {k: tuple(v.shape) for k, v in flatten_variables(abstract).items()}


def flatten_variables(variables: Mapping[str, Any]) -> Dict[str, Any]:
    """Nested Linen variables -> {'collection/module/.../name': leaf}."""
    flat = {}

    def visit(prefix, tree):
        if isinstance(tree, Mapping):
            for key, value in tree.items():
                visit(f"{prefix}/{key}" if prefix else str(key), value)
        else:
            flat[prefix] = tree

    visit("", variables)
    return flat


def unflatten_variables(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """Inverse of flatten_variables."""
    nested: Dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def expected_shapes() -> Dict[str, Tuple[int, ...]]:
    """{npz key: shape} of every variable of FIDInception (what a weights .npz must hold)."""
    return dict(_expected_shapes())


def random_variables(seed: int = 0, scale: float = 1.0) -> Dict[str, Any]:
    """Random Inception variables with sane activations (tests; no download needed).

    Conv kernels ~ N(0, 2 / fan_in) * scale, BatchNorm scale ~ U(0.5, 1.5), bias, mean ~ N(0, 0.1),
    var ~ U(0.5, 1.5). Drawn with numpy on the host: nothing is compiled.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in _expected_shapes().items():
        name = path.rsplit("/", 1)[1]
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(size=shape) * np.sqrt(2.0 / fan_in) * scale
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(size=shape) * 0.1
        flat[path] = value.astype(np.float32)
    return unflatten_variables(flat)


def check_variables(flat: Mapping[str, np.ndarray], source: str) -> None:
    """Raises DataError (one line) unless `flat` has exactly FIDInception's keys and shapes."""
    expected = _expected_shapes()
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    fix = ("; make it with python -m experiments.convert_inception --src=pt_inception-2015-12-05-"
           "6726825d.pth --out=" + source)
    if missing:
        raise DataError(f"{source} lacks {len(missing)} Inception variable(s), e.g. {missing[0]!r}"
                        + fix)
    if unexpected:
        raise DataError(f"{source} has {len(unexpected)} unexpected array(s), e.g. "
                        f"{unexpected[0]!r}" + fix)
    for key, shape in expected.items():
        if tuple(flat[key].shape) != shape:
            raise DataError(f"{source}: {key} has shape {tuple(flat[key].shape)}, expected "
                            f"{shape}" + fix)


def save_variables(path: str, flat: Mapping[str, np.ndarray]) -> None:
    """Writes flat variables (checked) to an uncompressed .npz at `path` (float32)."""
    check_variables(flat, path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


def load_variables(path: str) -> Dict[str, Any]:
    """Reads Inception variables from an .npz (never unpickles), as a Linen variables dict.

    Raises:
      DataError: the file is missing, not an .npz (a pickle or .pth is refused), or lacks a
        variable / has one of the wrong shape.
    """
    if not os.path.isfile(path):
        raise DataError(f"Inception weights {path} not found; make them with python -m "
                        f"experiments.convert_inception --src=pt_inception-2015-12-05-6726825d.pth"
                        f" --out={path} (see third_party/inception/README.md)")
    fix = ("; pickled files are refused. Convert the .pth with python -m "
           "experiments.convert_inception")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array, not an .npz of Inception variables; "
                            "make it with python -m experiments.convert_inception")
        with archive:
            flat = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, DataError):
            raise
        first_line = str(error).splitlines()[0] if str(error) else "unreadable"
        raise DataError(f"{path} is not a readable .npz of arrays ({type(error).__name__}: "
                        f"{first_line})" + fix) from None
    check_variables(flat, path)
    return unflatten_variables({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


# --------------------------------------------------------------------- torch state dict mapping
_TORCH_SUFFIXES = {"conv.weight": ("params", "conv/kernel"), "bn.weight": ("params", "bn/scale"),
                   "bn.bias": ("params", "bn/bias"), "bn.running_mean": ("batch_stats", "bn/mean"),
                   "bn.running_var": ("batch_stats", "bn/var")}
# Entries of the torch model that FID does not use: the 1008-way classifier and BN counters.
_TORCH_IGNORED = ("fc.", "AuxLogits.")


def from_torch_state_dict(state: Mapping[str, np.ndarray], source: str = "state dict"
                          ) -> Dict[str, np.ndarray]:
    """Maps pytorch-fid's FID Inception state dict (numpy arrays) to flat Flax variables.

    'Mixed_5b.branch1x1.conv.weight' (O, I, kh, kw) -> 'params/Mixed_5b/branch1x1/conv/kernel'
    (kh, kw, I, O); bn.weight/bias -> params .../bn/scale, bias; bn.running_mean/var ->
    batch_stats .../bn/mean, var. The classifier (fc.*) and num_batches_tracked are dropped.

    Raises:
      DataError: a key that is not part of the FID Inception, or a missing / misshaped variable.
    """
    flat = {}
    for key, value in state.items():
        if key.startswith(_TORCH_IGNORED) or key.endswith("num_batches_tracked"):
            continue
        module, _, suffix = key.partition(".")
        rest = key[len(module) + 1:]
        for torch_suffix, (collection, flax_suffix) in _TORCH_SUFFIXES.items():
            if rest.endswith(torch_suffix):
                path = rest[: -len(torch_suffix)].rstrip(".").replace(".", "/")
                name = "/".join(p for p in (collection, module, path, flax_suffix) if p)
                value = np.asarray(value, np.float32)
                if flax_suffix == "conv/kernel":
                    if value.ndim != 4:
                        raise DataError(f"{source}: {key} has shape {value.shape}, expected a 4-D "
                                        "convolution weight")
                    value = value.transpose(2, 3, 1, 0)
                flat[name] = value
                break
        else:
            raise DataError(f"{source}: unexpected entry {key!r}; is this pytorch-fid's FID "
                            "Inception (pt_inception-2015-12-05-6726825d.pth)?")
    check_variables(flat, source)
    return flat


# ------------------------------------------------------------------------- feature extraction
@functools.lru_cache(maxsize=None)
def _compiled_features(resize: bool):
    return jax.jit(lambda variables, images: FIDInception(resize=resize).apply(variables, images))


class FeatureExtractor:
    """Computes pool3 features of many images in fixed-size batches (one compilation).

    Args:
      variables: Inception variables (load_variables or random_variables).
      batch_size: images per call; the last batch is padded.
      name: identifies the weights in cached statistics (e.g. the .npz file name and its hash).
    """

    def __init__(self, variables: Mapping[str, Any], batch_size: int = 50,
                 name: str = "inception"):
        self.variables = jax.device_put(variables)
        self.batch_size = batch_size
        self.name = name
        self._apply = _compiled_features(True)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, C) in [-1, 1] -> features (N, 2048) float32 (host)."""
        images = np.asarray(images, np.float32)
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size]
            pad = self.batch_size - batch.shape[0]
            if pad:
                batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], np.float32)])
            out.append(np.asarray(self._apply(self.variables, batch))[:self.batch_size - pad])
        if not out:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.concatenate(out)
