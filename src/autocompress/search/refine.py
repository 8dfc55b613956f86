"""ODF2NNA's refinement loop: refine at an epsilon, sweep epsilons, choose one automatically, retrain.

:func:`refine_dense` is the entry point (``ac.refine_dense``); the unit statistics, selection,
rebuilding and bias folding it uses live in :mod:`autocompress.transforms.units`, the dense-chain
discovery in :mod:`autocompress.transforms.dense_chain`, its reports in
:mod:`autocompress.search.refine_report`, what a refined model must reach to pass (and the choice of
epsilon) in :mod:`autocompress.search.refine_gate`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from autocompress.cost import count_cost
from autocompress.finetune import evaluate_loss, evaluate_metric, split_outputs, train
from autocompress.search.pareto import non_dominated
from autocompress.search.refine_gate import DEFAULT_CONFIDENCE, Gate, choose_epsilon, quality_gate
from autocompress.search.refine_report import LayerUnits, Refined, RefineReport, SweepPoint
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

__all__ = ["refine_dense", "reinitialized", "sweep_epsilon"]


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


def _refine_auto(model: nn.Module, task: Task, statistic: str, gate: Gate, retrain_epochs: float | None,
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


