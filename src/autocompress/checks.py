"""Whether a user's model runs on a task: what the metric reads of its output (``output="auto"``) and
one batch of every split through the model, the loss and the metric, failing with the shapes named."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from autocompress.calls import OutputSelector, bind, call_model
from autocompress.task import Task
from autocompress.task.streamed import describe_value

__all__ = ["TaskError", "auto_output", "check_task"]


class TaskError(ValueError):
    """The model cannot run on the task's batches (the message names the split and the shapes)."""


def auto_output(model: nn.Module, example: Any) -> OutputSelector:
    """What the metric reads of ``model``'s output: None for a tensor, ``"logits"`` when there is
    such a field, else the first tensor in a tuple, dict or ``ModelOutput``."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            output = call_model(model, example)
    finally:
        for module, mode in modes:
            module.training = mode
    if isinstance(output, Tensor):
        return None
    items = dict(output.items()) if hasattr(output, "items") else None
    if items is not None:
        if isinstance(items.get("logits"), Tensor):
            return "logits"
        key = next((k for k, v in items.items() if isinstance(v, Tensor)), None)
        if key is not None:
            return key
    if isinstance(output, (tuple, list)):
        index = next((i for i, v in enumerate(output) if isinstance(v, Tensor)), None)
        if index is not None:
            return index
    raise TaskError(f"{type(model).__name__} returns {type(output).__name__} with no tensor in it; "
                    "give output= (a key, an index or a callable) to say what the metric reads")


def check_task(model: nn.Module, task: Task, output: OutputSelector = None) -> None:
    """Run ``model`` on the first batch of every split, and the task's loss and metric on the output.

    TaskError names the split, the batch's shapes and what failed.
    """
    from autocompress.finetune import kept_modes, unbound

    runner = bind(model, None, output)
    for split in ("train", "val", "test"):
        if not task.has_split(split) or task.evaluate is not None:  # the user's evaluate hook reads the outputs itself
            continue
        inputs, targets = next(iter(task.loader(split, shuffle=False)))
        where = f"the model on the first batch of the {split} split (inputs {describe_value(inputs)}, targets {describe_value(targets)})"
        with kept_modes(model), torch.no_grad():
            model.eval()
            try:
                outputs = call_model(runner, inputs)
            except Exception as error:  # noqa: BLE001 - reported with the shapes that caused it
                raise TaskError(f"{where} fails: {type(error).__name__}: {error}") from error
        if not isinstance(outputs, Tensor):
            raise TaskError(f"{where} returns {describe_value(outputs)}, not a tensor; give output= to pick one")
        try:
            loss = task.loss_fn()(outputs, targets) if task.train_step is None else None
            task.metric_fn()(outputs, targets)
        except Exception as error:  # noqa: BLE001
            raise TaskError(f"{where}: the loss or metric fails on outputs {describe_value(outputs)}: "
                            f"{type(error).__name__}: {error}") from error
        if loss is not None and not torch.isfinite(loss):
            raise TaskError(f"{where}: the loss is {float(loss)}")
    if task.train_step is not None:  # on a copy: a step in train mode would move the user's BatchNorm statistics
        batch = next(iter(task.loader("train", raw=True)))
        loss = task.train_step(unbound(copy.deepcopy(model)), batch)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise TaskError(f"train_step(model, batch) must return a scalar loss tensor, got {describe_value(loss)}")
