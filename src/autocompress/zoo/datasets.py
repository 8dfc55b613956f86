"""Bundled offline datasets (MNIST-1D, scikit-learn's toy sets) as seeded Tasks."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from autocompress.files import atomic_write, cache_dir
from autocompress.task import Task

__all__ = ["MNIST1D_NUM_SAMPLES", "TASKS", "cache_dir", "list_tasks", "load_task"]

MNIST1D_NUM_SAMPLES = 20_000  # 16k train (incl. validation) / 4k test; the package default is 5k
MNIST1D_GENERATION_SEED = 42  # the canonical MNIST-1D seed: the data is the same for every `seed`
MNIST1D_VAL_SAMPLES = 2_000


def load_task(name: str, seed: int = 0) -> Task:
    """The bundled task ``name`` with splits drawn from ``seed`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[name](seed)


def list_tasks() -> list[str]:
    """Names accepted by :func:`load_task`."""
    return list(TASKS)


# --- MNIST-1D ----------------------------------------------------------------------------


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """Generate (or read from the cache) MNIST-1D with MNIST1D_NUM_SAMPLES samples."""
    path = (
        cache_dir() / "datasets" / f"mnist1d-n{MNIST1D_NUM_SAMPLES}-s{MNIST1D_GENERATION_SEED}.npz"
    )
    if path.exists():
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = MNIST1D_NUM_SAMPLES
    args.seed = MNIST1D_GENERATION_SEED
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset reseeds the global RNGs; give the caller theirs back
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x": raw["x"].astype(np.float32),
        "y": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int64),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)
    return arrays


def _mnist1d(seed: int) -> Task:
    """MNIST-1D: inputs (N, 1, 40); 10 classes; validation carved from the training portion."""
    arrays = _mnist1d_arrays()
    x, y = arrays["x"][:, None, :], arrays["y"]
    train_idx, val_idx = _split_two(y, MNIST1D_VAL_SAMPLES / len(y), seed)
    return Task(
        name="mnist1d",
        train=_pair(x[train_idx], y[train_idx]),
        val=_pair(x[val_idx], y[val_idx]),
        test=_pair(arrays["x_test"][:, None, :], arrays["y_test"]),
    )


# --- scikit-learn toy sets ----------------------------------------------------------------


def _digits(seed: int) -> Task:
    """sklearn digits: inputs (N, 1, 8, 8) in [0, 1]; 10 classes; 70/15/15 stratified."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return _classification("digits", x, data.target, seed, standardize=False)


def _breast_cancer(seed: int) -> Task:
    """sklearn breast cancer: 30 standardized features; 2 classes; 70/15/15 stratified."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _classification("breast_cancer", data.data, data.target, seed, standardize=True)


def _wine(seed: int) -> Task:
    """sklearn wine: 13 standardized features; 3 classes; 70/15/15 stratified."""
    from sklearn.datasets import load_wine

    data = load_wine()
    return _classification("wine", data.data, data.target, seed, standardize=True)


def _diabetes(seed: int) -> Task:
    """sklearn diabetes: 10 standardized features; standardized target (N, 1); MSE, neg_rmse."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    train_idx, val_idx, test_idx = _split_three(None, len(data.target), seed)
    x = _standardize(data.data, train_idx)
    y = _standardize(data.target[:, None], train_idx)
    return Task(
        name="diabetes",
        train=_pair(x[train_idx], y[train_idx]),
        val=_pair(x[val_idx], y[val_idx]),
        test=_pair(x[test_idx], y[test_idx]),
        metric="neg_rmse",
        loss="mse",
        batch_size=64,
    )


def _classification(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, *, standardize: bool
) -> Task:
    train_idx, val_idx, test_idx = _split_three(y, len(y), seed)
    x = _standardize(x, train_idx) if standardize else x
    y = y.astype(np.int64)
    return Task(
        name=name,
        train=_pair(x[train_idx], y[train_idx]),
        val=_pair(x[val_idx], y[val_idx]),
        test=_pair(x[test_idx], y[test_idx]),
        batch_size=64,
    )


def _split_two(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(kept), np.sort(held)


def _split_three(labels: np.ndarray | None, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded 70/15/15 train/val/test index split, stratified when ``labels`` is given."""
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    train_idx, rest = train_test_split(index, test_size=0.3, random_state=seed, stratify=labels)
    rest_labels = None if labels is None else labels[rest]
    val_idx, test_idx = train_test_split(
        rest, test_size=0.5, random_state=seed, stratify=rest_labels
    )
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def _standardize(values: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance with statistics of the training rows only."""
    mean = values[train_idx].mean(axis=0)
    std = values[train_idx].std(axis=0)
    return ((values - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


TASKS: dict[str, Callable[[int], Task]] = {
    "mnist1d": _mnist1d,
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "wine": _wine,
    "diabetes": _diabetes,
}
