"""A task whose splits are the user's own loaders, streamed batch by batch (``Task.from_loaders``).

Nothing here holds a split in memory: every pass over a split iterates the user's loader again
(its batch size, shuffling, augmentation and workers are the user's). Each batch is mapped to
``(inputs, targets)``:

- a tuple/list batch ``(x, y)`` (a ``TensorDataset``'s) -> inputs ``x``, targets ``y``; with more
  than two items, all but the last are positional inputs;
- a dict batch (a tokenizer's, a ``transformers`` collator's) -> targets under ``labels`` (or
  ``label``, ``targets``, ``target``, ``y``), inputs the other keys; keys the model's forward does
  not take are left out when it is called (:func:`autocompress.calls.fit_inputs`);
- ``batch_to_inputs(batch)`` / ``batch_to_targets(batch)`` replace either rule.

Every batch is checked against the first training batch (same structure, dtypes and number of
dimensions; inputs and targets with one batch size), so a loader yielding something else fails with
a message naming the split, the batch and what differs. Passes are seeded: the train loader's
shuffling and augmentation draw from torch's global generator, which is seeded for each pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from autocompress.task import LOSSES, METRICS, SPLITS, Task, check_choice

__all__ = ["TARGET_KEYS", "BatchError", "StreamedTask"]

TARGET_KEYS = ("labels", "label", "targets", "target", "y")


class BatchError(ValueError):
    """A batch that cannot be mapped to (inputs, targets), or that differs from the first one."""


def describe_value(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {describe_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe_value(v) for v in value) + ")"
    return type(value).__name__


def _signature(value: Any) -> Any:
    """What every batch must share with the first: structure, dtypes, numbers of dimensions."""
    if isinstance(value, Tensor):
        return ("tensor", value.dtype, value.dim())
    if isinstance(value, Mapping):
        return ("dict", tuple((k, _signature(v)) for k, v in value.items()))
    return ("tuple", tuple(_signature(v) for v in value))


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    return [t for v in value for t in _tensors(v)]


def slice_inputs(inputs: Any, count: int) -> Any:
    """The first ``count`` samples of a batch's inputs (a tensor, tuple or dict of tensors), as new tensors."""
    if isinstance(inputs, Tensor):
        return inputs[:count].clone()
    if isinstance(inputs, Mapping):
        return {k: slice_inputs(v, count) for k, v in inputs.items()}
    return tuple(slice_inputs(v, count) for v in inputs)


def concat_inputs(parts: list[Any]) -> Any:
    """Batches' inputs joined along dim 0, in the same structure (sequences padded to one length
    are not assumed: tensors of different trailing shapes fail here with torch's message)."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: concat_inputs([p[k] for p in parts]) for k in first}
    return tuple(concat_inputs([p[i] for p in parts]) for i in range(len(first)))


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor in it (nested in dicts, tuples and lists) on ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


class _Pass:
    """One split of a :class:`StreamedTask` as an iterable of (inputs, targets), seeded per pass."""

    def __init__(self, task: StreamedTask, split: str, seed: int, raw: bool) -> None:
        self.task, self.split, self.seed, self.raw = task, split, seed, raw
        self.passes = 0  # each pass (epoch) draws from its own seed: reshuffled, and reproducibly so

    def __len__(self) -> int:
        return self.task.batches_in(self.split)

    def __iter__(self) -> Iterator[Any]:
        source = self.task.source(self.split)
        with torch.random.fork_rng():  # the sampler's and augmentation's draws of this pass, then the caller's RNG again
            torch.manual_seed(self.seed + 7919 * self.passes)
            self.passes += 1
            iterator = iter(source)
            first = next(iterator, _END)
        if first is _END:
            raise BatchError(f"task {self.task.name!r}: the {self.split} loader yielded no batch")
        for index, batch in enumerate(itertools.chain([first], iterator)):
            yield batch if self.raw else self.task.unpack(batch, self.split, index)


_END = object()


class StreamedTask(Task):
    """A :class:`~autocompress.task.Task` over loaders (see the module docstring); made by :meth:`Task.from_loaders`.

    ``train``, ``val`` and ``test`` are the user's loaders (any re-iterable of batches: a
    ``DataLoader``, a list of batches). Hooks: ``train_step(model, batch) -> loss`` replaces the
    loss of a training step (the batch as the loader yields it, on the training device; the model
    is called as the user calls it, its full output); ``evaluate(model, loader) -> float`` replaces
    the metric of a split (higher is better). Distillation, when asked for, needs the default step.
    """

    def __init__(  # noqa: PLR0913 - the loaders and hooks a user may give
        self,
        train: Iterable,
        val: Iterable,
        test: Iterable | None = None,
        *,
        metric: str | Callable = "accuracy",
        loss: str | Callable = "cross_entropy",
        batch_to_inputs: Callable[[Any], Any] | None = None,
        batch_to_targets: Callable[[Any], Tensor] | None = None,
        train_step: Callable[[Any, Any], Tensor] | None = None,
        evaluate: Callable[[Any, Iterable], float] | None = None,
        name: str = "task",
    ) -> None:
        # not Task.__init__: nothing is held in memory to check there
        self.name = name
        self.train, self.val, self.test = train, val, test
        self.metric, self.loss = metric, loss
        self.batch_to_inputs, self.batch_to_targets = batch_to_inputs, batch_to_targets
        self.train_step, self.evaluate = train_step, evaluate
        for split in SPLITS:
            self._check_source(split)
        check_choice("metric", metric, METRICS)
        check_choice("loss", loss, LOSSES)
        for hook in ("batch_to_inputs", "batch_to_targets", "train_step", "evaluate"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise TypeError(f"Task.from_loaders: {hook} must be a callable, got {type(getattr(self, hook)).__name__}")
        self._first: dict[str, tuple[Any, Tensor]] = {}
        inputs, targets = self.first_batch("train")
        self._reference = (_signature(inputs), _signature(targets))
        self.batch_size = len(targets)
        self._check_targets(targets)
        for split in ("val", "test"):
            if getattr(self, split) is not None:
                self.first_batch(split)

    # ---------------------------------------------------------------- checks
    def _check_source(self, split: str) -> None:
        source = getattr(self, split)
        if source is None:
            if split == "test":
                return
            raise ValueError(f"Task.from_loaders: the {split} loader is required (got None)")
        if isinstance(source, (Tensor, Mapping)) or not isinstance(source, Iterable):
            raise TypeError(f"Task.from_loaders: {split} must be a DataLoader or another iterable of batches, "
                            f"got {type(source).__name__}; for tensors in memory use Task(name, train=(x, y), ...)")
        if iter(source) is source:
            raise TypeError(f"Task.from_loaders: {split} is a one-shot iterator ({type(source).__name__}); every "
                            "epoch and evaluation iterates it again: pass a DataLoader or a list of batches")

    def _check_targets(self, targets: Tensor) -> None:
        if self.loss == "cross_entropy" and targets.is_floating_point() and targets.dim() < 2:
            raise BatchError(f"task {self.name!r}: loss 'cross_entropy' needs integer class labels (torch.long) or "
                             f"2-D class probabilities, but the train loader's targets are {describe_value(targets)}")
        if self.loss == "mse" and not targets.is_floating_point():
            raise BatchError(f"task {self.name!r}: loss 'mse' needs floating-point targets, got {describe_value(targets)}")

    def unpack(self, batch: Any, split: str, index: int) -> tuple[Any, Tensor]:
        """``(inputs, targets)`` of one batch of ``split``, checked against the first training batch."""
        where = f"task {self.name!r}: batch {index} of the {split} loader"
        try:
            inputs = self.batch_to_inputs(batch) if self.batch_to_inputs else _default_inputs(batch)
            targets = self.batch_to_targets(batch) if self.batch_to_targets else _default_targets(batch)
        except BatchError as error:
            raise BatchError(f"{where}: {error}") from None
        if not isinstance(targets, Tensor) or targets.dim() == 0:
            raise BatchError(f"{where}: targets must be a tensor with a batch dimension, got {describe_value(targets)}")
        tensors = _tensors(inputs) if isinstance(inputs, (Tensor, Mapping, tuple, list)) else []
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise BatchError(f"{where}: inputs must be a tensor, a tuple or a dict of tensors, got {describe_value(inputs)}")
        sizes = {len(t) for t in tensors} | {len(targets)}
        if len(sizes) > 1:
            raise BatchError(f"{where}: inputs and targets disagree on the batch size: inputs {describe_value(inputs)}, "
                             f"targets {describe_value(targets)}")
        reference = getattr(self, "_reference", None)
        if reference is not None and (_signature(inputs), _signature(targets)) != reference:
            first_inputs, first_targets = self._first["train"]
            raise BatchError(f"{where} differs from the first train batch (dtypes, structure or number of "
                             f"dimensions): inputs {describe_value(inputs)}, targets {describe_value(targets)}; the first train "
                             f"batch has inputs {describe_value(first_inputs)}, targets {describe_value(first_targets)}")
        return inputs, targets

    # ---------------------------------------------------------------- Task's interface
    def source(self, split: str) -> Iterable:
        """The user's loader of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"Task {self.name!r}: unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        source = getattr(self, split)
        if source is None:
            raise ValueError(f"Task {self.name!r} has no {split} split")
        return source

    def has_split(self, split: str) -> bool:
        return split in SPLITS and getattr(self, split) is not None

    def first_batch(self, split: str) -> tuple[Any, Tensor]:
        """The first (inputs, targets) of ``split``'s first seeded pass (kept: it is what examples are made of)."""
        if split not in self._first:
            self._first[split] = next(iter(self.loader(split)))
        return self._first[split]

    def split(self, split: str = "train") -> tuple[Tensor, Tensor]:
        raise TypeError(f"Task {self.name!r} streams its splits from loaders and never holds one in memory; "
                        f"iterate task.loader({split!r}) instead")

    def loader(self, split: str = "train", *, shuffle: bool | None = None, seed: int = 0,
               batch_size: int | None = None, drop_last: bool = False, raw: bool = False) -> _Pass:
        """One seeded pass over ``split``: (inputs, targets) per batch (``raw``: the batches as the loader
        yields them). Batching, shuffling and augmentation are the user's loader's; ``shuffle``,
        ``batch_size`` and ``drop_last`` are not applied."""
        self.source(split)
        return _Pass(self, split, seed, raw)

    def batches_in(self, split: str) -> int:
        try:
            return len(self.source(split))
        except TypeError:
            raise ValueError(f"Task {self.name!r}: the {split} loader has no length (an IterableDataset?); "
                             "give training budgets in steps (finetune_steps=...), not epochs") from None

    def steps_per_epoch(self) -> int:
        return max(1, self.batches_in("train"))

    def can_drop_last(self) -> bool:
        return False  # the user's loader decides

    def example_input(self, batch_size: int = 1) -> Any:
        """The first ``batch_size`` inputs of the first train batch (more batches when it is smaller)."""
        return self.sample_inputs("train", batch_size)

    def sample_inputs(self, split: str, count: int) -> Any:
        """The first ``count`` inputs of ``split`` (fewer when it is smaller), joined."""
        parts, have = [], 0
        for inputs, targets in self.loader(split):
            parts.append(inputs)
            have += len(targets)
            if have >= count:
                break
        return slice_inputs(parts[0] if len(parts) == 1 else concat_inputs(parts), count)

    @property
    def is_classification(self) -> bool:
        if self.loss == "cross_entropy":
            return True
        return self.loss != "mse" and not self.first_batch("train")[1].is_floating_point()

    @property
    def num_samples(self) -> dict[str, int | None]:
        """Samples per split: the loader's dataset length, None when it has none."""
        out: dict[str, int | None] = {}
        for split in SPLITS:
            source = getattr(self, split)
            if source is not None:
                try:
                    out[split] = len(source.dataset)  # type: ignore[attr-defined]
                except (AttributeError, TypeError):
                    out[split] = None
        return out

    def __repr__(self) -> str:
        loaders = ", ".join(f"{s}={type(getattr(self, s)).__name__}" for s in SPLITS if getattr(self, s) is not None)
        return f"StreamedTask({self.name!r}, {loaders}, metric={self.metric_name!r})"


def _default_inputs(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is None:
            raise BatchError(f"a dict batch needs its targets under one of {', '.join(TARGET_KEYS)} (it has "
                             f"{', '.join(map(str, batch))}); or give batch_to_targets=fn")
        return {k: v for k, v in batch.items() if k != key}
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0] if len(batch) == 2 else tuple(batch[:-1])
    raise BatchError(f"a batch must be (inputs, targets), a dict with labels, or be mapped by batch_to_inputs= and "
                     f"batch_to_targets=; got {describe_value(batch)}")


def _default_targets(batch: Any) -> Tensor:
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is None:
            raise BatchError(f"a dict batch needs its targets under one of {', '.join(TARGET_KEYS)}")
        return batch[key]
    return batch[-1]
