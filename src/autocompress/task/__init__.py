"""Task: the data splits, loss and metric a model is trained and judged on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["LOSSES", "METRICS", "REDUCTIONS", "SPLITS", "Task"]

MetricFn = Callable[[Tensor, Tensor], float]
LossFn = Callable[[Tensor, Tensor], Tensor]
SPLITS = ("train", "val", "test")


def _accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy in percent (0-100)."""
    if targets.numel() == 0:
        return math.nan
    predicted = outputs.argmax(dim=1)
    labels = targets.argmax(dim=1) if targets.dim() > 1 else targets
    return float((predicted == labels).float().mean().item() * 100.0)


def _neg_rmse(outputs: Tensor, targets: Tensor) -> float:
    """Negative root-mean-square error (higher is better)."""
    diff = outputs.float().reshape(targets.shape) - targets.float()
    return -float(diff.pow(2).mean().sqrt().item())


def _mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))


METRICS: dict[str, MetricFn] = {"accuracy": _accuracy, "neg_rmse": _neg_rmse}
LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": _mse}


def _accuracy_sum(outputs: Tensor, targets: Tensor) -> tuple[float, float]:
    labels = targets.argmax(dim=1) if targets.dim() > 1 else targets
    return float((outputs.argmax(dim=1) == labels).sum()) * 100.0, float(len(targets))


def _squared_sum(outputs: Tensor, targets: Tensor) -> tuple[float, float]:
    diff = outputs.float().reshape(targets.shape) - targets.float()
    return float(diff.pow(2).sum()), float(diff.numel())


def _cross_entropy_sum(outputs: Tensor, targets: Tensor) -> tuple[float, float]:
    return float(F.cross_entropy(outputs, targets, reduction="sum")), float(len(targets))


def _mse_sum(outputs: Tensor, targets: Tensor) -> tuple[float, float]:
    return float(F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype), reduction="sum")), float(outputs.numel())


#: built-in metrics and losses reduced batch by batch, exactly: name -> (per-batch (sum, count), final(sum, count))
REDUCTIONS: dict[str, tuple[Callable[[Tensor, Tensor], tuple[float, float]], Callable[[float, float], float]]] = {
    "accuracy": (_accuracy_sum, lambda total, count: total / count if count else math.nan),
    "neg_rmse": (_squared_sum, lambda total, count: -math.sqrt(total / count)),
    "cross_entropy": (_cross_entropy_sum, lambda total, count: total / count),
    "mse": (_mse_sum, lambda total, count: total / count),
}


def reduce(name: object, whole: Callable[[Tensor, Tensor], object], pairs: Iterable[tuple[Tensor, Tensor]]) -> float:
    """A metric or loss over batches of (outputs, targets): built-in ones summed batch by batch (exactly),
    any other ``whole(outputs, targets)`` once over every batch joined."""
    if not isinstance(name, str) or name not in REDUCTIONS:
        outputs, targets = zip(*pairs, strict=True)
        return float(whole(torch.cat(outputs), torch.cat(targets)))
    per_batch, final = REDUCTIONS[name]
    total = count = 0.0
    for outputs, targets in pairs:
        part, size = per_batch(outputs, targets)
        total, count = total + part, count + size
    return float(final(total, count))


@dataclass
class Task:
    """A supervised task: data splits, a loss and a metric (higher is better).

    ``metric``: "accuracy" (percent, 0-100), "neg_rmse", or ``fn(outputs, targets) -> float``.
    ``loss``: "cross_entropy", "mse", or ``fn(outputs, targets) -> scalar tensor``.
    """

    name: str
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor] | None = None
    metric: str | MetricFn = "accuracy"
    loss: str | LossFn = "cross_entropy"
    batch_size: int = 128

    def __post_init__(self) -> None:
        for split in SPLITS:
            self._check_split(split)
        inner = self.train[0].shape[1:]
        for split in ("val", "test"):
            data = getattr(self, split)
            if data is not None and data[0].shape[1:] != inner:
                raise ValueError(
                    f"Task {self.name!r}: {split} inputs have per-sample shape "
                    f"{tuple(data[0].shape[1:])} but train inputs have {tuple(inner)}; "
                    "all splits must share the per-sample shape"
                )
        check_choice("metric", self.metric, METRICS)
        check_choice("loss", self.loss, LOSSES)
        if (
            self.loss == "cross_entropy"
            and self.train[1].is_floating_point()
            and self.train[1].dim() < 2
        ):
            raise ValueError(
                f"Task {self.name!r}: loss 'cross_entropy' needs integer class labels "
                f"(torch.long) or 2-D class probabilities, got 1-D {self.train[1].dtype} targets"
            )
        if self.loss == "mse" and not self.train[1].is_floating_point():
            raise ValueError(
                f"Task {self.name!r}: loss 'mse' needs floating-point targets, "
                f"got {self.train[1].dtype}"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(
                f"Task {self.name!r}: batch_size must be a positive int, got {self.batch_size!r}"
            )

    #: hooks of a task over loaders (:meth:`from_loaders`); an in-memory task uses the defaults
    train_step = None
    evaluate = None

    @classmethod
    def from_loaders(
        cls,
        train: Iterable,
        val: Iterable,
        test: Iterable | None = None,
        *,
        metric: str | MetricFn = "accuracy",
        loss: str | LossFn = "cross_entropy",
        batch_to_inputs: Callable[[Any], Any] | None = None,
        batch_to_targets: Callable[[Any], Tensor] | None = None,
        train_step: Callable[[Any, Any], Tensor] | None = None,
        evaluate: Callable[[Any, Iterable], float] | None = None,
        name: str = "task",
    ) -> Task:
        """A task over the user's loaders (``DataLoader`` s or any re-iterable of batches), streamed: no
        split is ever held in memory. Batches may be ``(inputs, targets)`` tuples or dicts with
        ``labels``; see :mod:`autocompress.task.streamed` for the mapping, the hooks and the checks."""
        from autocompress.task.streamed import StreamedTask

        return StreamedTask(train, val, test, metric=metric, loss=loss, batch_to_inputs=batch_to_inputs,
                            batch_to_targets=batch_to_targets, train_step=train_step, evaluate=evaluate, name=name)

    def _check_split(self, split: str) -> None:
        data = getattr(self, split)
        if data is None:
            if split == "test":
                return
            raise ValueError(f"Task {self.name!r}: the {split} split is required (got None)")
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise TypeError(
                f"Task {self.name!r}: {split} must be a pair (inputs, targets), got {type(data).__name__}"
            )
        for role, value in zip(("inputs", "targets"), data, strict=True):
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"Task {self.name!r}: {split} {role} must be a torch.Tensor, got {type(value).__name__}"
                )
            if value.dim() == 0:
                raise ValueError(
                    f"Task {self.name!r}: {split} {role} must have a batch dimension, got a 0-d tensor"
                )
        inputs, targets = data
        if len(inputs) != len(targets):
            raise ValueError(
                f"Task {self.name!r}: {split} has {len(inputs)} inputs but {len(targets)} targets; "
                "the counts must match"
            )
        if len(inputs) == 0:
            raise ValueError(f"Task {self.name!r}: the {split} split is empty")
        if isinstance(data, list):
            setattr(self, split, tuple(data))

    # --- helpers -------------------------------------------------------------------------

    def split(self, split: str = "train") -> tuple[Tensor, Tensor]:
        """The (inputs, targets) of ``split`` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(
                f"Task {self.name!r}: unknown split {split!r}; allowed: {', '.join(SPLITS)}"
            )
        data = getattr(self, split)
        if data is None:
            raise ValueError(f"Task {self.name!r} has no {split} split")
        return data

    def has_split(self, split: str) -> bool:
        return split in SPLITS and getattr(self, split) is not None

    def source(self, split: str) -> DataLoader:
        """What an ``evaluate`` hook is given: a loader over ``split`` in order."""
        return self.loader(split, shuffle=False)

    def steps_per_epoch(self) -> int:
        """Training steps in one epoch (a trailing partial batch is dropped when a full one exists)."""
        return max(1, len(self.loader("train", drop_last=self.can_drop_last())))

    def can_drop_last(self) -> bool:
        """Drop a trailing partial batch (avoids size-1 BN batches) when a full batch exists."""
        return len(self.train[0]) >= self.batch_size

    def sample_inputs(self, split: str, count: int) -> Tensor:
        """The first ``count`` inputs of ``split``, as a new tensor."""
        return self.split(split)[0][:count].clone()

    def loader(
        self,
        split: str = "train",
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        drop_last: bool = False,
        raw: bool = False,
    ) -> DataLoader:
        """A DataLoader over ``split``; shuffled (seeded) by default for "train" only (``raw``: the same
        (inputs, targets) batches; for a task over loaders, the loader's own batches)."""
        inputs, targets = self.split(split)
        shuffle = split == "train" if shuffle is None else shuffle
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            TensorDataset(inputs, targets),
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
        )

    def example_input(self, batch_size: int = 1) -> Tensor:
        """The first ``batch_size`` training inputs, as a new tensor."""
        return self.train[0][:batch_size].clone()

    @property
    def metric_name(self) -> str:
        """The metric's name ("accuracy", "neg_rmse" or the callable's name)."""
        return (
            self.metric
            if isinstance(self.metric, str)
            else getattr(self.metric, "__name__", "metric")
        )

    @property
    def is_classification(self) -> bool:
        """True when targets are class labels (cross-entropy loss or integer targets)."""
        if self.loss == "cross_entropy":
            return True
        return self.loss != "mse" and not self.train[1].is_floating_point()

    @property
    def num_samples(self) -> dict[str, int]:
        """Number of samples per available split."""
        return {s: len(getattr(self, s)[0]) for s in SPLITS if getattr(self, s) is not None}

    def loss_fn(self) -> LossFn:
        """The loss as a callable ``(outputs, targets) -> scalar tensor``."""
        return LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    def metric_fn(self) -> MetricFn:
        """The metric as a callable ``(outputs, targets) -> float`` (higher is better)."""
        return METRICS[self.metric] if isinstance(self.metric, str) else self.metric


def check_choice(what: str, value: object, allowed: dict) -> None:
    if isinstance(value, str):
        if value not in allowed:
            raise ValueError(
                f"unknown {what} {value!r}; allowed: {', '.join(allowed)} or a callable"
            )
    elif not callable(value):
        raise TypeError(
            f"{what} must be one of {', '.join(allowed)} or a callable, got {type(value).__name__}"
        )
