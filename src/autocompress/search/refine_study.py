"""ODF2NNA's epsilon sweep as a Study: the accuracy / size trade-off in the machinery every search uses.

:func:`sweep_study` refines a dense model at every epsilon of a grid, retrains each distinct
refined model and stores it as one completed record of a
:class:`~autocompress.search.study.Study` (objectives accuracy and params), valued like a
search's records: ``metric`` (validation, after retraining), ``metric_before_finetune``
(before retraining, bias folded), ``metric_original``, ``accuracy_drop``, and every cost of
:func:`~autocompress.count_cost` with its ratio to the original's. So ``Study.pareto_front``,
``hypervolume``, ``best("accuracy_drop<=0.5")`` and ``autocompress front --plot`` work on it
and its front can be laid beside a search's. Tags: ``strategy="refine"``, the ``epsilon`` (the
smallest of the grid that keeps these units), ``hidden`` and the paired validation loss gap to
the original (``loss_gap``, ``loss_gap_se``).

A sweep that was stopped resumes: units already stored are not retrained. The records' policy
is the identity: a refined model is rebuilt from kept units, not made by applying a policy, so
``autocompress export`` / ``confirm`` refuse such a study and point at
``autocompress refine --epsilon E --out DIR`` (the study's meta holds ``refine``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from autocompress.cost import count_cost
from autocompress.files import weights_digest
from autocompress.finetune import evaluate_metric
from autocompress.policy import Policy
from autocompress.search.refine import sweep_epsilon, unit_statistics
from autocompress.search.refine_report import SweepPoint
from autocompress.search.study import Study, policy_key
from autocompress.task import Task
from autocompress.transforms.units import (
    DEFAULT_EPSILONS,
    DEFAULT_STATISTIC,
    NORMALISED,
    check_epsilon,
    check_statistic,
    select_units,
)

__all__ = ["stored_points", "sweep_study"]


def sweep_study(
    model: nn.Module,
    task: Task,
    storage: str | Path,
    study_name: str = "refine",
    *,
    epsilons: Sequence[float] | None = None,
    statistic: str = DEFAULT_STATISTIC,
    retrain_epochs: float = 5.0,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> Study:
    """Sweep ``epsilons`` (default :data:`DEFAULT_EPSILONS`) into study ``study_name`` of ``storage``.

    One completed record per distinct set of kept units (module docstring); returns the Study.
    The same study name with other settings (statistic, retraining, seed) or another model
    (a digest of its weights) is refused rather than mixed. ``model`` is never changed.
    """
    check_statistic(statistic)
    if epsilons is None and statistic not in NORMALISED:
        raise ValueError(f"sweep_study: the default epsilon grid is for the layer-normalised statistics "
                         f"({', '.join(NORMALISED)}); with statistic {statistic!r} pass epsilons=[...]")
    grid = sorted(set(DEFAULT_EPSILONS if epsilons is None else epsilons))
    if not grid:
        raise ValueError("sweep_study: epsilons is empty; give at least one epsilon >= 0")
    for epsilon in grid:
        check_epsilon(epsilon)
    if not retrain_epochs >= 0:
        raise ValueError(f"sweep_study: retrain_epochs must be >= 0, got {retrain_epochs}")
    settings = {"statistic": statistic, "retrain_epochs": float(retrain_epochs), "lr": float(lr), "seed": int(seed),
                "model": weights_digest(model)}
    study = Study.open(storage, study_name, objectives=["accuracy", "params"])
    stored = study.meta.get("refine")
    if stored is None and study.records():
        raise ValueError(f"study {study_name!r} in {storage} holds a search, not an epsilon sweep; use another study name")
    if stored is not None and stored != settings:
        differ = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
        raise ValueError(f"study {study_name!r} in {storage} holds a sweep of other settings (stored, given: {differ}; "
                         "'model' is a digest of the weights); use another study name")
    example = task.example_input(1)
    original = {**count_cost(model, example).as_dict(), "metric": evaluate_metric(model, task, "val")}
    if stored is None:
        study.set_meta(refine=settings, original={**original, **{f"{k}_ratio": 1.0 for k in _COSTS}})
    scores = unit_statistics(model, task.split("train")[0], statistic).scores
    keys = {r.tags.get("units") for r in study.records()}
    todo = []
    for epsilon in grid:  # ascending: each distinct model is tagged with the smallest epsilon that keeps its units
        key = _units_key(select_units(scores, epsilon))
        if key not in keys:
            keys.add(key)
            todo.append((epsilon, key))
    with _progress(progress, len(todo)) as advance:
        for epsilon, key in todo:
            start = time.perf_counter()
            [(point, small)] = sweep_epsilon(model, task, [epsilon], statistic=statistic, retrain_epochs=retrain_epochs,
                                             lr=lr, seed=seed)
            cost = count_cost(small, example).as_dict()
            values = {"metric": point.metric, "metric_before_finetune": point.metric_before_retrain,
                      "metric_original": original["metric"], "accuracy_drop": original["metric"] - point.metric,
                      **cost, **{f"{k}_ratio": cost[k] / original[k] if original[k] else 1.0 for k in _COSTS}}
            tags = {"strategy": "refine", "epsilon": epsilon, "hidden": point.hidden, "units": key,
                    "loss_gap": point.loss_gap, "loss_gap_se": point.loss_gap_se, "statistic": statistic}
            _add(study, values, tags, time.perf_counter() - start)
            advance()
    return study


_COSTS = ("flops", "macs", "params", "bitops", "bytes")


def stored_points(study: Study) -> list[SweepPoint]:
    """The sweep a :func:`sweep_study` study holds, as :class:`SweepPoint` s in ascending epsilon (for
    :func:`~autocompress.search.refine_gate.choose_epsilon`); ``on_front`` from the study's Pareto front."""
    front = {r.number for r in study.pareto_front()}
    return [SweepPoint(epsilon=r.tags["epsilon"], params=int(r.values["params"]), hidden=r.tags["hidden"],
                       metric_before_retrain=r.values["metric_before_finetune"], metric=r.values["metric"],
                       loss_gap=r.tags["loss_gap"], loss_gap_se=r.tags["loss_gap_se"], on_front=r.number in front)
            for r in sorted(study.completed(), key=lambda r: r.tags["epsilon"])]


def _units_key(kept: dict) -> str:
    """A short fingerprint of which units every layer keeps."""
    text = json.dumps({name: index.tolist() for name, index in sorted(kept.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _add(study: Study, values: dict[str, float], tags: dict, seconds: float) -> None:
    """Store one finished candidate (the identity policy: see the module docstring)."""
    policy = Policy()
    trial = optuna.trial.create_trial(
        values=[values[o.key] for o in study.objectives],
        user_attrs={"policy": policy.to_dict(), "key": policy_key(policy), "tags": tags, "values": values, "seconds": seconds},
    )
    study.optuna.add_trial(trial)


class _progress:
    """A rich progress bar over the sweep's epsilons (or nothing)."""

    def __init__(self, show: bool, total: int) -> None:
        self.bar = Progress(TextColumn("[bold]epsilon sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            transient=True) if show else None
        self.total = total

    def __enter__(self):  # noqa: ANN204
        if self.bar is None:
            return lambda: None
        self.bar.__enter__()
        job = self.bar.add_task("sweep", total=self.total)
        return lambda: self.bar.advance(job)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
