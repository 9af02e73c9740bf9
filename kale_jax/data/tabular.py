"""Tabular density-estimation sets: five UCI sets read from local files, and an embedded mixture.

Sets (registry names) and the files they read from ``data.data_dir`` (nothing is downloaded):

  redwine     winequality-red.csv      UCI Wine Quality: ';'-separated, quoted header, `quality`
  whitewine   winequality-white.csv    last (dropped); 1599 / 4898 rows, 11 features
              https://archive.ics.uci.edu/dataset/186/wine+quality
  parkinsons  parkinsons_updrs.data    UCI Parkinsons Telemonitoring: ','-separated with a header,
              https://archive.ics.uci.edu/dataset/189/parkinsons+telemonitoring
                                       5875 rows; subject#, age and sex (first 3 columns) dropped
  hepmass     hepmass/1000_train.csv   as distributed with the MAF benchmarks (Papamakarios et
              hepmass/1000_test.csv    al. 2017, https://zenodo.org/record/1161203): ','-separated,
                                       header '# label,...'; signal rows (label 1) of both files,
                                       label dropped; the test file's extra last column dropped
                                       (as MAF does); columns whose minimum value recurs more than
                                       5 times in the train file removed (MAF's rule: the discrete
                                       features)
  miniboone   miniboone/data.npy       the MAF benchmarks' preprocessed MiniBooNE array (N, 43),
                                       read with np.load(allow_pickle=False)
  gaussian_mixture  (embedded)         a fixed 5-component Gaussian mixture in 4-D whose log
                                       density is exact (`true_log_prob`), 20000 draws

Preprocessing (Wenliang et al. 2019, as used by the GEBM paper; `prepare`), in this order:
  1. split: a permutation of all rows from ``data.split_seed`` (default 0); the first 10% (floor)
     are the test split, then 10% of the rest, at most 1000, the validation split ('valid'), the
     remainder the training split;
  2. wines only: uniform dequantisation noise U(-h/2, h/2) per column, h = the median spacing
     between consecutive distinct values of that column in the training split (the wines are
     recorded on coarse grids), drawn from the split seed for every row;
  3. column removal decided on the training split: constant columns, then, while some pair of
     columns has |Pearson correlation| > 0.98, the first column of such a pair;
  4. standardisation by the training split's mean and standard deviation (the original authors
     fitted it on all the data; we fit it on the training split only).
The embedded mixture is only split (steps 2-4 would change its known density).

Every array is float32 (N, D). A missing or malformed file raises kale_jax.errors.DataError with
one line: the file, what was expected and where to get it.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from kale_jax import checks
from kale_jax.errors import DataError

SPLITS = ("train", "valid", "test")
TEST_FRACTION = 0.1
VALID_FRACTION = 0.1
MAX_VALID = 1000
CORRELATION_THRESHOLD = 0.98
MAF_MAX_MIN_COUNT = 5
DEFAULT_SPLIT_SEED = 0

WINE_URL = "https://archive.ics.uci.edu/dataset/186/wine+quality"
PARKINSONS_URL = "https://archive.ics.uci.edu/dataset/189/parkinsons+telemonitoring"
MAF_URL = "https://zenodo.org/record/1161203 (data.tar.gz of the MAF benchmarks)"

# The embedded mixture: K components in D dimensions, fixed by MIXTURE_SEED.
MIXTURE_NAME = "gaussian_mixture"
MIXTURE_DIM = 4
MIXTURE_COMPONENTS = 5
MIXTURE_SIZE = 20000
MIXTURE_SEED = 1234


class Splits(NamedTuple):
    """A prepared set: float32 arrays (N_split, D) and what was done to the raw columns.

    columns: indices of the raw columns kept; mean, std: the training split's statistics used
    for standardisation (float64 (D,); zeros / ones when not standardised).
    """
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    columns: np.ndarray
    mean: np.ndarray
    std: np.ndarray


# ------------------------------------------------------------------------------ file readers
def _require(path: str, expected: str, source: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path} not found: expected {expected}; get it from {source} and set "
                        "config.data.data_dir to its directory")


def _loadtxt(path: str, delimiter: str, expected: str, source: str, skiprows: int = 1,
             usecols=None) -> np.ndarray:
    _require(path, expected, source)
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=skiprows, dtype=np.float64,
                           ndmin=2, usecols=usecols)
    except (ValueError, IndexError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is malformed ({detail}): expected {expected}; get it from "
                        f"{source}") from None
    if table.shape[0] == 0:
        raise DataError(f"{path} has no data rows: expected {expected}; get it from {source}")
    return table


def _header(path: str, delimiter: str) -> list:
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        line = f.readline()
    return [c.strip().strip('"').strip() for c in line.strip().split(delimiter)]


def read_wine(path: str) -> np.ndarray:
    """The 11 features of a UCI wine-quality CSV (quality dropped): float64 (N, 11)."""
    expected = "the UCI wine-quality CSV (';'-separated, quoted header, 12 columns, 'quality' last)"
    _require(path, expected, WINE_URL)
    header = _header(path, ";")
    if len(header) != 12 or header[-1] != "quality":
        raise DataError(f"{path} is malformed (header has {len(header)} columns, last "
                        f"{header[-1]!r}): expected {expected}; get it from {WINE_URL}")
    table = _loadtxt(path, ";", expected, WINE_URL)
    if table.shape[1] != 12:
        raise DataError(f"{path} is malformed (rows have {table.shape[1]} columns): expected "
                        f"{expected}; get it from {WINE_URL}")
    return table[:, :-1]


def read_parkinsons(path: str) -> np.ndarray:
    """parkinsons_updrs.data without subject#, age and sex: float64 (N, 19)."""
    expected = ("the UCI Parkinsons telemonitoring file (','-separated, header 'subject#,...', "
                "22 columns)")
    _require(path, expected, PARKINSONS_URL)
    header = _header(path, ",")
    if len(header) != 22 or header[0] != "subject#":
        raise DataError(f"{path} is malformed (header {','.join(header[:3])}... with "
                        f"{len(header)} columns): expected {expected}; get it from "
                        f"{PARKINSONS_URL}")
    table = _loadtxt(path, ",", expected, PARKINSONS_URL)
    if table.shape[1] != 22:
        raise DataError(f"{path} is malformed (rows have {table.shape[1]} columns): expected "
                        f"{expected}; get it from {PARKINSONS_URL}")
    return table[:, 3:]


def read_hepmass(train_path: str, test_path: str) -> np.ndarray:
    """Signal rows of the MAF HepMass files with MAF's column removal: float64 (N, D).

    Rows of the train file come first, then those of the test file (the split is ours)."""
    expected = "the MAF benchmarks' HepMass CSV (','-separated, header '# label,...')"
    tables = []
    for path in (train_path, test_path):
        _require(path, expected, MAF_URL)
        header = _header(path, ",")
        if not header or header[0].lstrip("#").strip() != "label":
            raise DataError(f"{path} is malformed (first header column {header[0]!r}): expected "
                            f"{expected}; get it from {MAF_URL}")
        tables.append(_loadtxt(path, ",", expected, MAF_URL))
    train, test = tables
    if test.shape[1] == train.shape[1] + 1:
        test = test[:, :-1]  # the distributed test file has one extra trailing column
    if test.shape[1] != train.shape[1]:
        raise DataError(f"{test_path} is malformed ({test.shape[1]} columns, {train_path} has "
                        f"{train.shape[1]}): expected {expected}; get it from {MAF_URL}")
    train = train[train[:, 0] == 1, 1:]
    test = test[test[:, 0] == 1, 1:]
    if train.shape[0] == 0:
        raise DataError(f"{train_path} has no signal rows (label 1): expected {expected}; get it "
                        f"from {MAF_URL}")
    keep = [j for j in range(train.shape[1])
            if np.sum(train[:, j] == train[:, j].min()) <= MAF_MAX_MIN_COUNT]
    return np.concatenate([train, test])[:, keep]


def read_miniboone(path: str) -> np.ndarray:
    """The MAF benchmarks' MiniBooNE array: float64 (N, D)."""
    expected = "the MAF benchmarks' MiniBooNE array (a 2-D float .npy, shape (N, 43))"
    _require(path, expected, MAF_URL)
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is malformed ({detail}): expected {expected}; get it from "
                        f"{MAF_URL}") from None
    if (not isinstance(table, np.ndarray) or table.ndim != 2 or table.shape[0] == 0
            or not np.issubdtype(table.dtype, np.floating)):
        raise DataError(f"{path} is malformed (got {getattr(table, 'dtype', '?')} array of shape "
                        f"{getattr(table, 'shape', '?')}): expected {expected}; get it from "
                        f"{MAF_URL}")
    return table.astype(np.float64)


# ------------------------------------------------------------------------ the embedded mixture
@functools.lru_cache(maxsize=1)
def mixture_parameters() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (K,), means (K, D), Cholesky factors (K, D, D)) of the embedded mixture, float64.

    Drawn once from numpy's legacy RandomState(MIXTURE_SEED) (a frozen stream)."""
    rng = np.random.RandomState(MIXTURE_SEED)
    k, d = MIXTURE_COMPONENTS, MIXTURE_DIM
    weights = rng.dirichlet(np.full(k, 5.0))
    means = 1.5 * rng.randn(k, d)
    chol = np.tril(0.3 * rng.randn(k, d, d), -1)
    chol += np.einsum("kd,de->kde", rng.uniform(0.25, 0.7, (k, d)), np.eye(d))
    return weights, means, chol


def true_log_prob(x: np.ndarray) -> np.ndarray:
    """Exact log density of the embedded mixture: (N, D) -> float64 (N,), nats."""
    weights, means, chol = mixture_parameters()
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    logs = []
    for w, m, L in zip(weights, means, chol):
        # Solve L y = (x - m)^T; log N = -|y|^2 / 2 - log det L - d log(2 pi) / 2.
        y = np.linalg.solve(L, (x - m).T)
        logs.append(math.log(w) - 0.5 * np.sum(y * y, axis=0) - np.sum(np.log(np.diag(L)))
                    - 0.5 * d * math.log(2 * math.pi))
    logs = np.stack(logs)
    top = logs.max(axis=0)
    return top + np.log(np.sum(np.exp(logs - top), axis=0))


def mixture_draws(num: int = MIXTURE_SIZE) -> np.ndarray:
    """`num` i.i.d. draws of the mixture (fixed: RandomState(MIXTURE_SEED + 1)): float64 (N, D)."""
    weights, means, chol = mixture_parameters()
    rng = np.random.RandomState(MIXTURE_SEED + 1)
    components = rng.choice(len(weights), size=num, p=weights)
    noise = rng.randn(num, MIXTURE_DIM)
    return means[components] + np.einsum("nde,ne->nd", chol[components], noise)


# ------------------------------------------------------------------------------ preprocessing
def split_sizes(num_rows: int) -> Tuple[int, int, int]:
    """(train, valid, test) sizes: test = floor(10%), valid = min(floor(10% of rest), 1000)."""
    num_test = int(num_rows * TEST_FRACTION)
    num_valid = min(int((num_rows - num_test) * VALID_FRACTION), MAX_VALID)
    return num_rows - num_test - num_valid, num_valid, num_test


def median_spacing(column: np.ndarray) -> float:
    """Median gap between consecutive distinct values (0 for a constant column)."""
    values = np.unique(column)
    return float(np.median(np.diff(values))) if values.size > 1 else 0.0


def correlated_columns(train: np.ndarray, threshold: float = CORRELATION_THRESHOLD) -> np.ndarray:
    """Indices of the columns kept after removing constant columns, then repeatedly the first
    column of a pair with |correlation| > threshold (on `train`, (N, D)): int64 (D',)."""
    keep = [j for j in range(train.shape[1]) if np.std(train[:, j]) > 0]
    while len(keep) > 1:
        corr = np.abs(np.corrcoef(train[:, keep], rowvar=False))
        np.fill_diagonal(corr, 0.0)
        high = np.argwhere(corr > threshold)
        if high.size == 0:
            break
        keep.pop(int(high[:, 0].min()))
    return np.asarray(keep, np.int64)


def prepare(table: np.ndarray, *, seed: int = DEFAULT_SPLIT_SEED, dequantize: bool = False,
            clean: bool = True, standardize: bool = True) -> Splits:
    """Splits and preprocesses raw rows (N, D_raw) as the module docstring describes."""
    table = np.asarray(table, np.float64)
    if table.ndim != 2 or not np.all(np.isfinite(table)):
        raise DataError(f"expected a finite (N, D) table, got shape {table.shape} with "
                        f"{np.size(table) - np.sum(np.isfinite(table))} non-finite entries")
    num_train, num_valid, num_test = split_sizes(table.shape[0])
    if min(num_train, num_valid, num_test) < 1:
        raise DataError(f"a table of {table.shape[0]} rows is too small to split into "
                        "train / valid / test (need at least 11 rows)")
    order = np.random.RandomState(seed).permutation(table.shape[0])
    test_rows, valid_rows = order[:num_test], order[num_test:num_test + num_valid]
    train_rows = order[num_test + num_valid:]
    if dequantize:
        spacing = np.array([median_spacing(table[train_rows, j]) for j in range(table.shape[1])])
        noise = np.random.RandomState(seed + 1).uniform(-0.5, 0.5, table.shape)
        table = table + noise * spacing
    columns = (correlated_columns(table[train_rows]) if clean
               else np.arange(table.shape[1], dtype=np.int64))
    table = table[:, columns]
    if standardize:
        mean, std = table[train_rows].mean(axis=0), table[train_rows].std(axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = np.zeros(table.shape[1]), np.ones(table.shape[1])
    table = ((table - mean) / std).astype(np.float32)
    return Splits(train=table[train_rows], valid=table[valid_rows], test=table[test_rows],
                  columns=columns, mean=mean, std=std)


# ---------------------------------------------------------------------------------- the sets
class TabularSet(NamedTuple):
    """files: paths relative to data_dir; read: (*absolute paths) -> raw table; dequantize and
    clean/standardize: preprocessing switches (see `prepare`)."""
    files: Tuple[str, ...]
    read: Callable[..., np.ndarray]
    dequantize: bool = False
    preprocess: bool = True


SETS: Dict[str, TabularSet] = {
    "redwine": TabularSet(("winequality-red.csv",), read_wine, dequantize=True),
    "whitewine": TabularSet(("winequality-white.csv",), read_wine, dequantize=True),
    "parkinsons": TabularSet(("parkinsons_updrs.data",), read_parkinsons),
    "hepmass": TabularSet(("hepmass/1000_train.csv", "hepmass/1000_test.csv"), read_hepmass),
    "miniboone": TabularSet(("miniboone/data.npy",), read_miniboone),
    MIXTURE_NAME: TabularSet((), lambda: mixture_draws(), preprocess=False),
}
NAMES = tuple(SETS)
UCI_NAMES = tuple(n for n in NAMES if n != MIXTURE_NAME)


def _split_seed(data_config: Mapping[str, Any]) -> int:
    seed = data_config.get("split_seed", None)
    seed = DEFAULT_SPLIT_SEED if seed is None else seed
    return checks.check_int(seed, "config.data.split_seed", minimum=0)


@functools.lru_cache(maxsize=8)
def _load(name: str, data_dir: str, seed: int) -> Splits:
    spec = SETS[name]
    if spec.files and not data_dir:
        raise DataError(f"data {name!r} reads {', '.join(spec.files)} from config.data.data_dir, "
                        "which is empty; set it to the directory holding the file(s)")
    table = spec.read(*[os.path.join(data_dir, f) for f in spec.files])
    splits = prepare(table, seed=seed, dequantize=spec.dequantize, clean=spec.preprocess,
                     standardize=spec.preprocess)
    for array in splits[:3]:
        array.setflags(write=False)
    return splits


def load(data_config: Mapping[str, Any]) -> Splits:
    """The prepared splits of the set named by data_config.name (cached per directory/seed)."""
    name = data_config.get("name", None)
    if name not in SETS:
        raise ValueError(f"data.name must be one of {NAMES} for tabular data, got {name!r}.")
    data_dir = data_config.get("data_dir", None) or ""
    return _load(name, os.path.abspath(data_dir) if data_dir else "", _split_seed(data_config))


def split(data_config: Mapping[str, Any], split_name: str) -> np.ndarray:
    """The whole split 'train', 'valid' or 'test': float32 (N_split, D), read-only."""
    if split_name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split_name!r}.")
    return getattr(load(data_config), split_name)


def known_log_prob(data_config: Mapping[str, Any]) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The exact log density of the prepared data when known (the embedded mixture), else None."""
    return true_log_prob if data_config.get("name", None) == MIXTURE_NAME else None
