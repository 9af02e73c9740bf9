"""Preparing a tfds image set once, before training: offline-first, without Apache Beam.

    steps = plan(config.data, manual_dir="/data/celeba")   # what will be read or downloaded
    print("\\n".join(describe(steps)))
    prepare(config.data, manual_dir="/data/celeba")        # checks, then builds; {split: count}

`python -m experiments.prepare_data` is the command-line front. tfds 4.9's `tfds build` command
imports apache_beam even for sets that do not need it; these four sets are GeneratorBasedBuilders,
built here through tfds' Python API (`builder.download_and_prepare` with a DownloadConfig whose
manual_dir holds the source files). tfds builds every split of a set from the same archives, so
the splits the config trains and evaluates on (tfds_images.ImageSet.train_split / eval_split)
come with the others; `prepare` checks that they are there and returns every split's size.

Source files (tfds' registered names, sizes and SHA-256 sums, `builder.url_infos`):
  cifar10                     cifar-10-binary.tar.gz (162 MiB), downloaded from the CIFAR page
  celeb_a                     img_align_celeba.zip (1.34 GiB) and four text files, from the
                              CelebA Google Drive: manual only (Drive's quota and confirmation
                              pages break automatic downloads)
  downsampled_imagenet/32x32  train_32x32.tar (3.83 GiB), valid_32x32.tar (154 MiB), from
                              image-net.org after login: manual only
  lsun/bedroom                bedroom_train_lmdb.zip (42.8 GiB), bedroom_val_lmdb.zip (4.45 MiB),
                              downloaded from dl.yf.io; reading LMDB needs `pip install
                              tensorflow-io`
A file found in the manual directory is read in place (tfds checks its size and SHA-256); any
other is downloaded into DATA_DIR/downloads (tfds shows progress bars for downloads and for
writing each split). tfds' prepared copies on GCS are not used: what is built is what is listed.

Errors (kale_jax.errors.DataError, one line each, raised before anything is written where they
can be foreseen): a missing manual file (naming every missing file and where it comes from), a
manual file of the wrong size or checksum (naming the file, expected and found), no network for a
file to download (naming the host and the manual alternative), and a missing tensorflow-io.
"""
from __future__ import annotations

import importlib.util
import os
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from kale_jax.data import tfds_images
from kale_jax.errors import DataError

# Where a user gets each source file: (the site or folder all of a set's files come from,
# {file name: where in it, or ''}).
ORIGINS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar.html",
                {"cifar-10-binary.tar.gz": "CIFAR-10 binary version"}),
    "celeb_a": ("the CelebA Google Drive linked from "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html", {
                    "img_align_celeba.zip": "folder Img, Align&Cropped Images",
                    "list_eval_partition.txt": "folder Eval",
                    "list_attr_celeba.txt": "folder Anno",
                    "list_landmarks_align_celeba.txt": "folder Anno",
                    "identity_CelebA.txt": "folder Anno"}),
    "downsampled_imagenet/32x32": (
        "https://image-net.org/download-images.php after login (Downsampled ImageNet 32x32, "
        "the tar archives of image files)", {}),
    "lsun/bedroom": ("http://dl.yf.io/lsun/scenes/ (https://github.com/fyu/lsun)", {}),
}
# Sets whose files must be in the manual directory: tfds' URLs do not serve them reliably.
MANUAL_ONLY: Dict[str, str] = {
    "celeb_a": "Google Drive's download quota and confirmation pages break automatic downloads",
    "downsampled_imagenet/32x32": "image-net.org serves these files only after a login",
}
# The config file that trains on each set (named in messages).
CONFIG_FILES: Dict[str, str] = {
    "cifar10": "configs/cifar10.py", "celeb_a": "configs/celeba.py",
    "downsampled_imagenet/32x32": "configs/imagenet32.py", "lsun/bedroom": "configs/lsun.py",
}
NEEDS_MODULE = {"lsun/bedroom": ("tensorflow_io", "tensorflow-io")}
NETWORK_TIMEOUT_S = 15.0


class SourceFile(NamedTuple):
    """One source file of a set.

    filename: tfds' name for it (the name it must have in the manual directory).
    url: the URL tfds downloads it from.
    size: its size in bytes as tfds registers it (None if unknown).
    sha256: its SHA-256 as tfds registers it (None if unknown).
    origin: where a user gets it by hand.
    path: the file in the manual directory, or None when it is not there (then downloaded).
    """
    filename: str
    url: str
    size: Optional[int]
    sha256: Optional[str]
    origin: str
    path: Optional[str]


class Plan(NamedTuple):
    """What `prepare` will do for a data config.

    name: the tfds name (config.data.name).
    data_dir: the tfds data directory (root).
    dataset_dir: the directory of the prepared set (data_dir/name/version).
    manual_dir: the directory of manually downloaded files, or None.
    splits: the splits the config trains and evaluates on (train split, held-out split).
    files: the set's source files.
    prepared: whether the set is already prepared in data_dir (nothing to do).
    """
    name: str
    data_dir: str
    dataset_dir: str
    manual_dir: Optional[str]
    splits: Tuple[str, ...]
    files: Tuple[SourceFile, ...]
    prepared: bool


def plan(data_config: Mapping[str, Any], manual_dir: Optional[str] = None) -> Plan:
    """What preparing `data_config`'s set involves; reads only (sizes of manual files).

    Args:
      data_config: config.data (name, data_dir; manual_dir is the default of `manual_dir`).
      manual_dir: directory holding manually downloaded source files (None: data.manual_dir).
    Raises:
      DataError: data.name is not a tfds image set.
    """
    name = data_config.get("name", None)
    if name not in tfds_images.IMAGE_SETS:
        raise DataError(f"config.data.name={name!r} is not a tfds image set; prepare_data "
                        f"prepares {tfds_images.DATASETS} (the embedded sets need no preparing)")
    spec = tfds_images.image_set(data_config)
    if manual_dir is None:
        manual_dir = data_config.get("manual_dir", None) or None
    manual_dir = None if not manual_dir else os.path.abspath(os.path.expanduser(manual_dir))
    builder = tfds_images._builder(data_config)  # pylint: disable=protected-access
    registered = {info.filename: (url, info) for url, info in
                  (type(builder).url_infos or {}).items()}
    files = []
    for filename in spec.manual_files:
        url, info = registered.get(filename, ("", None))
        path = None if manual_dir is None else os.path.join(manual_dir, filename)
        files.append(SourceFile(
            filename=filename, url=url, size=None if info is None else int(info.size),
            sha256=None if info is None else info.checksum,
            origin=_origin(name, filename, url),
            path=path if path is not None and os.path.isfile(path) else None))
    return Plan(name=name, data_dir=str(builder.data_dir_root), dataset_dir=str(builder.data_dir),
                manual_dir=manual_dir, splits=(spec.train_split, spec.eval_split),
                files=tuple(files), prepared=bool(builder.is_prepared()))


def describe(steps: Plan) -> List[str]:
    """Lines saying what `prepare` will read, download and write."""
    lines = [f"Data set '{steps.name}' for {CONFIG_FILES.get(steps.name, 'its config')}: "
             f"trains on split '{steps.splits[0]}', evaluates on '{steps.splits[1]}'."]
    if steps.prepared:
        return lines + [f"Already prepared in {steps.dataset_dir}; nothing to do."]
    for f in steps.files:
        size = format_size(f.size)
        if f.path is not None:
            lines.append(f"  read      {f.path} ({size})")
        elif steps.name in MANUAL_ONLY:
            lines.append(f"  missing   {f.filename} ({size}): get it from {f.origin}")
        else:
            lines.append(f"  download  {f.filename} ({size}) from {f.url}")
    total = sum(f.size or 0 for f in steps.files
                if f.path is None and steps.name not in MANUAL_ONLY)
    if total:
        lines.append(f"Downloads: {format_size(total)} into {steps.data_dir}/downloads "
                     "(skipped for a file already there).")
    lines.append(f"Writes every split of '{steps.name}' to {steps.dataset_dir}.")
    return lines


def check(steps: Plan, *, reach: Optional[Callable[[str], Optional[str]]] = None) -> None:
    """Raises DataError (one line) for what would make `prepare` fail, before it writes.

    Checks, in order: missing manual files of a manual-only set (all named, with where each
    comes from), manual files of the wrong size, a missing optional module, and network access
    to every host a file must be downloaded from (`reach(url)` returns None or the reason it
    failed; default: an HTTP HEAD request through the environment's proxies).
    """
    if steps.prepared:
        return
    fix = f"--manual_dir={steps.manual_dir or 'DIR'}"
    missing = [f for f in steps.files if f.path is None]
    if steps.name in MANUAL_ONLY and missing:
        source, details = ORIGINS[steps.name]
        named = []
        for f in missing:
            notes = [format_size(f.size)] + ([details[f.filename]] if f.filename in details
                                             else [])
            named.append(f"{f.filename} ({', '.join(notes)})")
        where = ", ".join(named) + f", from {source}"
        if steps.manual_dir:
            raise DataError(f"'{steps.name}' needs its source files downloaded by hand "
                            f"({MANUAL_ONLY[steps.name]}); missing from --manual_dir="
                            f"{steps.manual_dir}: {where}. Put them there under these names "
                            "and rerun")
        raise DataError(f"'{steps.name}' needs its source files downloaded by hand "
                        f"({MANUAL_ONLY[steps.name]}) and no --manual_dir was given; download "
                        f"{where}, put them in one directory and rerun with --manual_dir=DIR")
    for f in steps.files:
        if f.path is not None and f.size is not None:
            found = os.path.getsize(f.path)
            if found != f.size:
                raise DataError(f"{f.path} has {found} bytes but tfds expects {f.size} "
                                f"({format_size(f.size)}, sha256 {f.sha256}): an incomplete "
                                f"or different file; download it again from {f.origin}")
    module = NEEDS_MODULE.get(steps.name)
    if module is not None and importlib.util.find_spec(module[0]) is None:
        raise DataError(f"'{steps.name}' stores its images in LMDB files, which tfds reads with "
                        f"{module[1]}; install it: pip install {module[1]}")
    reach = reach or _head
    for f in missing:
        reason = reach(f.url)
        if reason is not None:
            host = urllib.parse.urlparse(f.url).netloc
            raise DataError(f"no network: cannot reach {host} to download {f.filename} "
                            f"({format_size(f.size)}) for '{steps.name}' ({reason}); connect "
                            f"(or set HTTPS_PROXY), or get it from {f.origin}, put it in a "
                            f"directory and rerun with {fix}")


def prepare(data_config: Mapping[str, Any], manual_dir: Optional[str] = None, *,
            echo: Callable[[str], None] = print) -> Dict[str, int]:
    """Prepares the set of `data_config` in data.data_dir (tfds' default when empty).

    Prints the plan (`describe`), checks it (`check`), then builds every split with tfds'
    builder (its progress bars), and checks that the config's splits are there.

    Args:
      data_config: config.data.
      manual_dir: directory of manually downloaded source files (None: data.manual_dir).
      echo: where the lines go.
    Returns:
      {split: number of examples} of the prepared set.
    Raises:
      DataError: see `check`; also a checksum mismatch or a lost network during the build.
    """
    steps = plan(data_config, manual_dir)
    for line in describe(steps):
        echo(line)
    check(steps)
    started = time.monotonic()
    builder = tfds_images._builder(data_config)  # pylint: disable=protected-access
    if not steps.prepared:
        _build(builder, steps)
    splits = {name: int(split.num_examples) for name, split in builder.info.splits.items()}
    absent = [s for s in steps.splits if s not in splits]
    if absent:
        raise DataError(f"'{steps.name}' in {steps.dataset_dir} has no split {absent} "
                        f"(it has {sorted(splits)}); delete that directory and rerun")
    if not steps.prepared:
        echo(f"Prepared '{steps.name}' in {steps.dataset_dir} in "
             f"{time.monotonic() - started:.0f} s: "
             + ", ".join(f"{k} {v} examples" for k, v in sorted(splits.items()))
             + f". Train with --config.data.data_dir={steps.data_dir}")
    return splits


def _build(builder, steps: Plan) -> None:
    """builder.download_and_prepare, with tfds' download failures as one-line DataErrors."""
    import requests  # pylint: disable=g-import-not-at-top
    tfds = tfds_images._tfds()  # pylint: disable=protected-access
    from tensorflow_datasets.core.download import (  # pylint: disable=g-import-not-at-top
        download_manager)
    config = tfds.download.DownloadConfig(
        manual_dir=steps.manual_dir, try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP)
    try:
        builder.download_and_prepare(download_config=config)
    except download_manager.NonMatchingChecksumError as error:
        text = " ".join(str(error).split())
        raise DataError(f"checksum mismatch for '{steps.name}': {text[:400]}; the file is "
                        "incomplete or not the one tfds expects: delete it and download it "
                        f"again ({'; '.join(f'{f.filename} from {f.origin}' for f in steps.files)})"
                        ) from None
    except (requests.exceptions.RequestException, tfds.download.DownloadError) as error:
        text = " ".join(str(error).split())
        raise DataError(f"download failed for '{steps.name}' (no network or the server "
                        f"refused: {type(error).__name__}: {text[:300]}); rerun when online, or "
                        "put the source files in a directory and pass --manual_dir=DIR") from None


def _origin(name: str, filename: str, url: str) -> str:
    source, details = ORIGINS.get(name, (url, {}))
    detail = details.get(filename)
    return f"{source}, {detail}" if detail else source


def _head(url: str) -> Optional[str]:
    """None if `url`'s server answers at all (any HTTP status), else why not."""
    import requests  # pylint: disable=g-import-not-at-top
    try:
        requests.head(url, timeout=NETWORK_TIMEOUT_S, allow_redirects=False)
    except requests.exceptions.RequestException as error:
        return type(error).__name__
    return None


def format_size(size: Optional[int]) -> str:
    """Bytes as '163 MiB' / '1.34 GiB' ('size unknown' for None)."""
    if size is None:
        return "size unknown"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{size} bytes"
