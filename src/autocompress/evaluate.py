"""Evaluator: what a policy really does to a model's metric and cost.

``Evaluator(task).evaluate(model, policy)``:

1. apply the policy (a new model; the user's is never changed);
2. re-estimate BatchNorm statistics on training batches (pruned channels shift them);
3. calibrate the activation quantizers' ranges on training batches;
4. measure the metric ("before fine-tune");
5. optionally fine-tune for a budget of epochs or steps (quantization-aware when the
   policy quantizes; optional distillation from the original model's outputs; optional
   sequential freezing of the low-rank factors) and measure again ("after fine-tune").

Costs are counted on the built model. Everything is seeded; with the same seed the
same result comes back.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autocompress.apply import apply_policy
from autocompress.calls import OutputSelector, bind, example_to, fit_inputs
from autocompress.cost import CostReport, count_cost
from autocompress.finetune import (
    check_freeze,
    evaluate_metric,
    recalibrate_batchnorm,
    resolve_device,
    train,
)
from autocompress.policy import Policy
from autocompress.space import SearchSpace
from autocompress.task import Task
from autocompress.transforms.quantize import calibrate_activations


@dataclass
class EvalResult:
    """Metric and cost of one compressed model."""

    policy: Policy
    metric_name: str
    metric_original: float
    metric_before_finetune: float
    metric_after_finetune: float | None
    cost: CostReport
    original_cost: CostReport
    times: dict[str, float] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def metric(self) -> float:
        """The final metric: after fine-tuning if it ran, else before."""
        return self.metric_before_finetune if self.metric_after_finetune is None else self.metric_after_finetune

    @property
    def metric_drop(self) -> float:
        return self.metric_original - self.metric

    @property
    def ratios(self) -> dict[str, float]:
        return self.cost.ratio_to(self.original_cost)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "metric_name": self.metric_name,
            "metric_original": self.metric_original,
            "metric_before_finetune": self.metric_before_finetune,
            "metric_after_finetune": self.metric_after_finetune,
            "metric": self.metric,
            "cost": self.cost.as_dict(),
            "original_cost": self.original_cost.as_dict(),
            "ratios": self.ratios,
            "times": self.times,
            "finetune": self.finetune,
        }


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself if it already lives on ``device``, else a moved copy (never moves the user's)."""
    current = next((p.device for p in model.parameters()), device)
    return model if current == device else copy.deepcopy(model).to(device)


class Evaluator:
    """Apply, recalibrate, fine-tune (budgeted) and measure policies on one task.

    ``finetune_epochs`` (may be fractional) or ``finetune_steps``: the fine-tune budget;
    0 / None skips fine-tuning. ``distill``: weight of distillation from the original
    model's outputs (0 = plain task loss). ``freeze``: "sequential" fine-tunes the factors of
    the policy's low-rank layers in turn, ``freeze_period`` steps per phase (arXiv 2309.12412;
    :mod:`autocompress.transforms.freezing`); "none" (default) trains them jointly.
    ``split``: the split the metric is read on.
    ``output``: which of the model's outputs the metric and loss read when it returns a tuple,
    dict or ``ModelOutput`` (a key such as ``"logits"``, an index or a callable); a space given
    to :meth:`evaluate` with its own ``output`` takes precedence.
    """

    def __init__(
        self,
        task: Task,
        *,
        finetune_epochs: float = 0.0,
        finetune_steps: int | None = None,
        lr: float = 1e-3,
        distill: float = 0.0,
        temperature: float = 4.0,
        bn_batches: int = 20,
        calibration_batches: int = 8,
        split: str = "val",
        seed: int = 0,
        device: str = "auto",
        progress: bool = False,
        output: OutputSelector = None,
        freeze: str = "none",
        freeze_period: int = 1,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"task must be an autocompress.Task, got {type(task).__name__}")
        if finetune_epochs < 0 or (finetune_steps is not None and finetune_steps < 0):
            raise ValueError("finetune_epochs and finetune_steps must be >= 0")
        if not 0.0 <= distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {distill}")
        check_freeze(freeze, freeze_period)
        task.source(split)  # raises if the split does not exist
        self.task = task
        self.finetune_epochs = finetune_epochs
        self.finetune_steps = finetune_steps
        self.lr = lr
        self.distill = distill
        self.temperature = temperature
        self.bn_batches = bn_batches
        self.calibration_batches = calibration_batches
        self.split = split
        self.seed = seed
        self.device = device
        self.progress = progress
        self.output = output
        self.freeze = freeze
        self.freeze_period = freeze_period
        self._baselines: dict[tuple, tuple[float, CostReport]] = {}

    @property
    def finetunes(self) -> bool:
        return bool(self.finetune_steps) or (self.finetune_steps is None and self.finetune_epochs > 0)

    def baseline(self, model: nn.Module, output: OutputSelector = None) -> tuple[float, CostReport]:
        """Metric and cost of the uncompressed model (cached per model object and output selector;
        ``output`` defaults to the evaluator's)."""
        output = self.output if output is None else output
        key = (id(model), id(output) if callable(output) else output)
        if key not in self._baselines:
            dev = resolve_device(self.device)
            metric = evaluate_metric(bind(on_device(model, dev), None, output), self.task, self.split, dev)
            self._baselines[key] = (metric, count_cost(model, fit_inputs(model, self.task.example_input())))
        return self._baselines[key]

    def evaluate(self, model: nn.Module, policy: Policy | dict, *, space: SearchSpace | None = None) -> EvalResult:
        """Compress ``model`` by ``policy`` and measure it (``model`` is left untouched)."""
        dev = resolve_device(self.device)
        times: dict[str, float] = {}
        output = self.output if space is None or space.output is None else space.output
        metric_original, original_cost = self.baseline(model, output)
        example = fit_inputs(model, self.task.example_input())

        start = time.perf_counter()
        torch.manual_seed(self.seed)
        small = apply_policy(model, policy, example, space=space).to(dev)
        run = bind(small, None, output)  # the same modules, called for the selected output
        policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        times["apply"] = time.perf_counter() - start

        start = time.perf_counter()
        recalibrate_batchnorm(run, self.task, batches=self.bn_batches, seed=self.seed, device=dev)
        calibrate_activations(run, self._calibration_inputs(), device=dev, pairs=False)
        times["calibrate"] = time.perf_counter() - start

        start = time.perf_counter()
        before = evaluate_metric(run, self.task, self.split, dev)
        times["evaluate"] = time.perf_counter() - start

        after, log = None, {}
        if self.finetunes:
            start = time.perf_counter()
            teacher = bind(on_device(model, dev), None, output) if self.distill > 0 else None
            log = train(
                run,
                self.task,
                epochs=None if self.finetune_steps else self.finetune_epochs,
                steps=self.finetune_steps or None,
                lr=self.lr,
                teacher=teacher,
                distill_weight=self.distill,
                temperature=self.temperature,
                seed=self.seed,
                device=dev,
                progress=self.progress,
                freeze=self.freeze,
                freeze_period=self.freeze_period,
            )
            times["finetune"] = time.perf_counter() - start
            start = time.perf_counter()
            after = evaluate_metric(run, self.task, self.split, dev)
            times["evaluate"] += time.perf_counter() - start
        small.eval()
        cost = count_cost(small, example_to(example, dev))
        return EvalResult(
            policy=policy,
            metric_name=self.task.metric_name,
            metric_original=metric_original,
            metric_before_finetune=before,
            metric_after_finetune=after,
            cost=cost,
            original_cost=original_cost,
            times=times,
            finetune=log,
            model=small,
        )

    def _calibration_inputs(self) -> list:
        loader = self.task.loader("train", shuffle=True, seed=self.seed + 1)
        batches = []
        for index, (inputs, _) in enumerate(loader):
            if index >= self.calibration_batches:
                break
            batches.append(inputs)
        return batches
