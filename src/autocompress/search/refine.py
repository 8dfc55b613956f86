"""ODF2NNA's refinement loop: refine at an epsilon, sweep epsilons, choose one automatically, retrain.

:func:`refine_dense` is the entry point (``ac.refine_dense``); the unit statistics, selection,
rebuilding and bias folding it uses live in :mod:`autocompress.transforms.units`, the dense-chain
discovery in :mod:`autocompress.transforms.dense_chain`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from autocompress.cost import count_cost
from autocompress.finetune import evaluate_loss, evaluate_metric, split_outputs, train
from autocompress.search.pareto import non_dominated
from autocompress.task import Task
from autocompress.transforms.dense_chain import DenseChain, dense_chain
from autocompress.transforms.units import (
    DEFAULT_EPSILONS,
    DEFAULT_STATISTIC,
    NORMALISED,
    UnitStats,
    check_epsilon,
    check_statistic,
    deviation_bound,
    measure_units,
    rebuild_dense,
    removed_units,
    select_units,
    unit_scores,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_LOSS_TOLERANCE",
    "DEFAULT_REGRESSION_LOSS_TOLERANCE",
    "LayerUnits",
    "RefineReport",
    "Refined",
    "SweepPoint",
    "choose_epsilon",
    "default_loss_tolerance",
    "default_tolerance",
    "passes",
    "refine_dense",
    "reinitialized",
    "sweep_epsilon",
]

#: ``refine_dense(epsilon="auto")``: the refined model's validation cross-entropy may exceed the original's by this
DEFAULT_LOSS_TOLERANCE = 0.05
#: ... and for other losses (regression's MSE) by this fraction of the original's validation loss
#: (2 % of the MSE is about 1 % of the RMSE, the default metric tolerance)
DEFAULT_REGRESSION_LOSS_TOLERANCE = 0.02
#: ... and not only by the luck of a small validation set: the loss gap plus this many standard
#: errors of the paired per-sample differences must be within the loss tolerance (one-sided 95 %);
#: chosen on development seeds by ``benchmarks/odf2nna_choice.py``
DEFAULT_CONFIDENCE = 1.645


# --------------------------------------------------------------------------- reports


class LayerUnits(BaseModel):
    """One hidden layer's units: how many were kept, which, and their scores."""

    layer: str
    units: int
    kept: int
    removed: int
    kept_units: list[int]
    score_min: float
    score_median: float
    score_max: float
    removed_score_max: float | None  # the most useful removed unit's score (None: none removed)


class SweepPoint(BaseModel):
    """One epsilon of a sweep: the refined model's size and validation metric."""

    epsilon: float
    params: int
    hidden: list[int]
    metric_before_retrain: float
    metric: float  # after retraining
    loss: float | None = None  # validation task loss after retraining
    loss_gap: float | None = None  # mean over validation samples of (refined - original) per-sample loss
    loss_gap_se: float | None = None  # its standard error (sample std of the paired differences / sqrt(n))
    on_front: bool = False


class RefineReport(BaseModel):
    """What :func:`refine_dense` measured and did."""

    statistic: str
    epsilon: float
    samples: int
    layers: list[LayerUnits]
    hidden: list[int]
    params_before: int
    params_after: int
    output_bound: float  # max over outputs of :func:`deviation_bound` (before retraining)
    metric_name: str | None = None
    metric_original: float | None = None  # validation split
    metric_before_retrain: float | None = None
    metric_retrained: float | None = None
    retrain_epochs: float = 0.0
    tolerance: float | None = None
    loss_original: float | None = None  # validation task loss of the original
    loss_tolerance: float | None = None
    confidence: float | None = None  # standard errors of the loss gap the gate adds
    met_tolerance: bool | None = None
    sweep: list[SweepPoint] = []

    @property
    def params_removed(self) -> float:
        """Fraction of the parameters removed (0-1)."""
        return 1.0 - self.params_after / self.params_before


class Refined(NamedTuple):
    """The refined model and its report (unpack: ``model, report = refine_dense(...)``)."""

    model: nn.Module
    report: RefineReport


# --------------------------------------------------------------------------- refine / sweep


def default_tolerance(task: Task, original_metric: float) -> float:
    """0.5 points for an accuracy (percent); otherwise 1 % of the original metric's magnitude."""
    return 0.5 if task.metric == "accuracy" else 0.01 * abs(original_metric)


def _params(model: nn.Module, example: Tensor) -> int:
    return count_cost(model, example).params


def _layer_report(name: str, score: Tensor, keep: Tensor) -> LayerUnits:
    removed = removed_units(keep, len(score))
    return LayerUnits(
        layer=name,
        units=len(score),
        kept=len(keep),
        removed=len(removed),
        kept_units=keep.tolist(),
        score_min=float(score.min()),
        score_median=float(score.median()),
        score_max=float(score.max()),
        removed_score_max=float(score[removed].max()) if removed.numel() else None,
    )


@dataclass
class _Measured:
    """What refining needs, measured once per model: its chain, unit stats and scores."""

    chain: DenseChain
    stats: dict[str, UnitStats]
    scores: dict[str, Tensor]
    example: Tensor


def unit_statistics(model: nn.Module, inputs: Tensor, statistic: str) -> _Measured:
    check_statistic(statistic)
    chain = dense_chain(model, inputs[:8])
    stats = measure_units(model, inputs, chain)
    return _Measured(chain, stats, unit_scores(model, chain, stats, statistic), inputs[:1].clone())


def _refine_once(model: nn.Module, measured: _Measured, epsilon: float, statistic: str) -> Refined:
    kept = select_units(measured.scores, epsilon)
    small = rebuild_dense(model, measured.chain, kept, measured.stats)
    bound = deviation_bound(model, measured.chain, kept, measured.stats)
    report = RefineReport(
        statistic=statistic,
        epsilon=float(epsilon),
        samples=next(iter(measured.stats.values())).samples,
        layers=[_layer_report(name, measured.scores[name], kept[name]) for name in kept],
        hidden=[len(kept[layer.linear]) for layer in measured.chain.layers],
        params_before=_params(model, measured.example),
        params_after=_params(small, measured.example),
        output_bound=float(bound.max()),
    )
    return Refined(small, report)


def _retrain(model: nn.Module, task: Task, epochs: float, seed: int, lr: float) -> None:
    if epochs > 0:
        train(model, task, epochs=epochs, lr=lr, seed=seed)


def _sample_losses(model: nn.Module, task: Task) -> Tensor:
    """The task loss of every validation sample (float64), in eval mode, without grad."""
    outputs, targets = split_outputs(model, task, "val", "cpu")
    loss = task.loss_fn()
    return torch.stack([loss(outputs[i : i + 1], targets[i : i + 1]) for i in range(len(targets))]).double()


def _loss_gap(model: nn.Module, task: Task, reference: Tensor) -> tuple[float, float]:
    """Mean and standard error of ``model``'s per-sample validation loss minus ``reference``'s (paired)."""
    gap = _sample_losses(model, task) - reference
    se = float(gap.std() / math.sqrt(len(gap))) if len(gap) > 1 else 0.0
    return float(gap.mean()), se


def sweep_epsilon(
    model: nn.Module,
    task: Task,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    *,
    statistic: str = DEFAULT_STATISTIC,
    retrain_epochs: float = 5.0,
    lr: float = 1e-3,
    seed: int = 0,
    stop_when: Callable[[SweepPoint], bool] | None = None,
) -> list[tuple[SweepPoint, nn.Module]]:
    """Refine at each epsilon, retrain, measure the validation metric; mark the non-dominated points.

    Unit statistics come from ``task``'s training inputs. Epsilons that keep the same units share
    one refined model. Returns ``(point, retrained model)`` pairs in the order of ``epsilons``,
    stopping after the first point for which ``stop_when(point)`` is true (if given);
    ``point.on_front``: no other point has fewer-or-equal params and a higher-or-equal metric.
    """
    if not epsilons:
        raise ValueError("sweep_epsilon: epsilons is empty; give at least one epsilon >= 0")
    for epsilon in epsilons:
        check_epsilon(epsilon)
    measured = unit_statistics(model, task.split("train")[0], statistic)
    reference = _sample_losses(model, task)
    done: dict[tuple, tuple[SweepPoint, nn.Module]] = {}
    results = []
    for epsilon in epsilons:
        kept = select_units(measured.scores, epsilon)
        key = tuple(tuple(k.tolist()) for k in kept.values())
        if key not in done:
            small, report = _refine_once(model, measured, epsilon, statistic)
            before = evaluate_metric(small, task, "val")
            _retrain(small, task, retrain_epochs, seed, lr)
            gap, se = _loss_gap(small, task, reference)
            point = SweepPoint(
                epsilon=epsilon,
                params=report.params_after,
                hidden=report.hidden,
                metric_before_retrain=before,
                metric=evaluate_metric(small, task, "val"),
                loss=evaluate_loss(small, task, "val"),
                loss_gap=gap,
                loss_gap_se=se,
            )
            done[key] = (point, small)
        point, small = done[key]
        results.append((point.model_copy(update={"epsilon": float(epsilon)}), small))
        if stop_when is not None and stop_when(results[-1][0]):
            break
    mask = non_dominated(np.array([[p.params, p.metric] for p, _ in results], dtype=float), ["minimize", "maximize"])
    return [(p.model_copy(update={"on_front": bool(on)}), m) for (p, m), on in zip(results, mask, strict=True)]


def choose_epsilon(points: Sequence[SweepPoint], original_metric: float, tolerance: float, *,
                   original_loss: float | None = None, loss_tolerance: float | None = None,
                   confidence: float = 0.0) -> SweepPoint | None:
    """The point with the largest epsilon that :func:`passes`; None when no point qualifies."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (in the metric's units), got {tolerance}")
    good = [p for p in points if passes(p, original_metric, tolerance, original_loss, loss_tolerance, confidence)]
    return max(good, key=lambda p: (p.epsilon, -p.params)) if good else None


def passes(point: SweepPoint, original_metric: float, tolerance: float, original_loss: float | None = None,
           loss_tolerance: float | None = None, confidence: float = 0.0) -> bool:
    """Whether a sweep point is good enough: its validation metric at most ``tolerance`` below the
    original's and, with ``loss_tolerance``, its validation loss at most ``loss_tolerance`` above the
    original's, by a margin: ``loss_gap + confidence * loss_gap_se <= loss_tolerance`` (the mean and
    standard error of the per-sample loss differences; without them ``point.loss - original_loss``).
    """
    if point.metric < original_metric - tolerance:
        return False
    if loss_tolerance is None:
        return True
    if point.loss_gap is not None:
        return point.loss_gap + confidence * (point.loss_gap_se or 0.0) <= loss_tolerance
    if original_loss is None or point.loss is None:
        return True
    return point.loss - original_loss <= loss_tolerance


def default_loss_tolerance(task: Task, original_loss: float) -> float:
    """0.05 nats of validation cross-entropy for classification; otherwise 2 % of the original's validation loss."""
    if task.is_classification:
        return DEFAULT_LOSS_TOLERANCE
    return DEFAULT_REGRESSION_LOSS_TOLERANCE * abs(original_loss)


def refine_dense(
    model: nn.Module,
    data: Tensor | Task,
    epsilon: float | str = 0.05,
    *,
    statistic: str = DEFAULT_STATISTIC,
    tolerance: float | None = None,
    loss_tolerance: float | str | None = "auto",
    confidence: float = DEFAULT_CONFIDENCE,
    retrain_epochs: float | None = None,
    epsilons: Sequence[float] | None = None,
    lr: float = 1e-3,
    seed: int = 0,
) -> Refined:
    """Remove the hidden units of a dense ``model`` whose usefulness score is below ``epsilon``.

    ``data``: the inputs the unit statistics are measured on, or a Task (its training inputs;
    then the validation metric is reported and the model can be retrained). ``epsilon``: a
    float >= 0, or ``"auto"`` (needs a Task): :func:`sweep_epsilon` over ``epsilons`` (default
    :data:`DEFAULT_EPSILONS`), each refined model retrained for ``retrain_epochs`` (default 5),
    and the largest epsilon that :func:`passes` is chosen: its validation metric at most
    ``tolerance`` below the original's (default :func:`default_tolerance`) and its validation
    loss above the original's by at most ``loss_tolerance`` even after adding ``confidence``
    standard errors of the per-sample loss differences (``"auto"``: :func:`default_loss_tolerance`,
    0.05 nats of cross-entropy for classification, 2 % of the original's loss otherwise; ``None``:
    metric only). On validation sets of a few dozen samples accuracy moves in steps of several
    points and cannot tell a safe refinement from one that has lost confidence; the loss can, and
    the standard error keeps a gap that only the luck of a small sample hides from passing.
    If no epsilon passes, nothing is removed. Retraining longer lets more pass at similar test
    accuracy (``benchmarks/results/odf2nna_choice.md``: three times the epochs removed more on four
    of five datasets, e.g. MNIST-1D 46 -> 73 %, breast cancer 44 -> 79 % of the parameters);
    ``benchmarks/odf2nna.py`` retrains as long as the original was trained. There, a fixed
    epsilon of 0.45 (chosen on other seeds) removed 75-94 % of the parameters of wide MLPs at no
    mean test loss on three of five datasets, where the automatic choice removed 80-92 % and lost
    0.2-1.1 points on the classification sets, its validation splits being small
    (``benchmarks/results/odf2nna.md``).
    The sweep runs from the largest epsilon down and stops at the first that qualifies (the
    report's ``sweep`` holds the points evaluated; :func:`sweep_epsilon` gives the whole curve).
    With a float epsilon the model is retrained only when ``retrain_epochs`` > 0 (default 0).
    Returns ``Refined(model, report)``; the input model is never changed.
    """
    task = data if isinstance(data, Task) else None
    inputs = task.split("train")[0] if task is not None else data
    if not isinstance(inputs, Tensor):
        raise TypeError(f"refine_dense: data must be an input tensor or a Task, got {type(data).__name__}")
    check_statistic(statistic)
    if isinstance(epsilon, str):
        if epsilon != "auto":
            raise ValueError(f"refine_dense: epsilon must be a number >= 0 or 'auto', got {epsilon!r}")
        if task is None:
            raise ValueError("refine_dense: epsilon='auto' needs a Task (it retrains and validates), got a tensor")
        gate = quality_gate(model, task, tolerance, loss_tolerance, confidence)
        return _refine_auto(model, task, statistic, gate, retrain_epochs, epsilons, lr, seed)
    check_epsilon(epsilon)
    retrain_epochs = 0.0 if retrain_epochs is None else retrain_epochs
    if retrain_epochs > 0 and task is None:
        raise ValueError("refine_dense: retrain_epochs > 0 needs a Task to train on, got a tensor")
    small, report = _refine_once(model, unit_statistics(model, inputs, statistic), epsilon, statistic)
    if task is not None:
        report = _with_metrics(report, model, small, task, retrain_epochs, seed, lr)
    return Refined(small, report)


def _with_metrics(report: RefineReport, model: nn.Module, small: nn.Module, task: Task, epochs: float, seed: int, lr: float) -> RefineReport:
    before = evaluate_metric(small, task, "val")
    _retrain(small, task, epochs, seed, lr)
    return report.model_copy(update={
        "metric_name": task.metric_name,
        "metric_original": evaluate_metric(model, task, "val"),
        "metric_before_retrain": before,
        "metric_retrained": evaluate_metric(small, task, "val") if epochs > 0 else None,
        "retrain_epochs": float(epochs),
    })


@dataclass(frozen=True)
class _Gate:
    """What a refined model must reach on the validation split (see :func:`passes`)."""

    metric: float  # the original's
    tolerance: float
    loss: float  # the original's
    loss_tolerance: float | None
    confidence: float

    def passes(self, point: SweepPoint) -> bool:
        return passes(point, self.metric, self.tolerance, self.loss, self.loss_tolerance, self.confidence)


def quality_gate(model: nn.Module, task: Task, tolerance: float | None, loss_tolerance: float | str | None,
          confidence: float) -> _Gate:
    original = evaluate_metric(model, task, "val")
    original_loss = evaluate_loss(model, task, "val")
    tolerance = default_tolerance(task, original) if tolerance is None else tolerance
    if not tolerance >= 0:
        raise ValueError(f"refine_dense: tolerance must be >= 0 (in the metric's units), got {tolerance}")
    if loss_tolerance == "auto":
        loss_tolerance = default_loss_tolerance(task, original_loss)
    if loss_tolerance is not None and (isinstance(loss_tolerance, str) or not loss_tolerance >= 0):
        raise ValueError(f"refine_dense: loss_tolerance must be a number >= 0, 'auto' or None, got {loss_tolerance!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence < math.inf:
        raise ValueError(f"refine_dense: confidence must be a finite number >= 0 (standard errors), got {confidence!r}")
    loss_tolerance = None if loss_tolerance is None else float(loss_tolerance)
    return _Gate(original, float(tolerance), original_loss, loss_tolerance, float(confidence))


def _refine_auto(model: nn.Module, task: Task, statistic: str, gate: _Gate, retrain_epochs: float | None,
                 epsilons: Sequence[float] | None, lr: float, seed: int) -> Refined:
    if epsilons is None and statistic not in NORMALISED:
        raise ValueError(
            f"refine_dense: the default epsilon grid is for the layer-normalised statistics "
            f"({', '.join(NORMALISED)}); with statistic {statistic!r} pass epsilons=[...]"
        )
    retrain_epochs = 5.0 if retrain_epochs is None else retrain_epochs
    grid = list(epsilons if epsilons is not None else DEFAULT_EPSILONS)
    for value in grid:
        check_epsilon(value)
    # largest epsilon first: the first one within tolerance is the answer, smaller ones need no retraining
    descending = sorted(set(grid), reverse=True)
    sweep = sweep_epsilon(model, task, descending, statistic=statistic, retrain_epochs=retrain_epochs,
                          lr=lr, seed=seed, stop_when=gate.passes)
    points = [p for p, _ in sweep]
    chosen = choose_epsilon(points, gate.metric, gate.tolerance, original_loss=gate.loss,
                            loss_tolerance=gate.loss_tolerance, confidence=gate.confidence)
    measured = unit_statistics(model, task.split("train")[0], statistic)
    if chosen is None:  # nothing is good enough: keep every unit, do not retrain
        small, report = _refine_once(model, measured, 0.0, statistic)
        met, retrained = False, None
    else:
        _, report = _refine_once(model, measured, chosen.epsilon, statistic)
        small = next(m for p, m in sweep if p.epsilon == chosen.epsilon)
        met, retrained = True, chosen.metric
    report = report.model_copy(update={
        "metric_name": task.metric_name,
        "metric_original": gate.metric,
        "metric_before_retrain": chosen.metric_before_retrain if chosen else gate.metric,
        "metric_retrained": retrained,
        "retrain_epochs": float(retrain_epochs) if chosen else 0.0,
        "tolerance": gate.tolerance,
        "loss_original": gate.loss,
        "loss_tolerance": gate.loss_tolerance,
        "confidence": gate.confidence,
        "met_tolerance": met,
        "sweep": points,
    })
    return Refined(small, report)


def reinitialized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters re-drawn (``reset_parameters``), seeded.

    The same architecture "trained from scratch": the control arm of the ODF2NNA experiment.
    """
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


