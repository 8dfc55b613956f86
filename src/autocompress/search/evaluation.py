"""Evaluate one candidate: the :class:`EvaluationSpec` a process needs and the values stored for a policy.

The search process (inline), its local worker processes (:mod:`autocompress.search.pool`) and
``autocompress worker`` on other machines (:mod:`autocompress.search.worker`, the spec rebuilt
with :func:`spec_from_config`) all evaluate through :func:`evaluate_values`.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.evaluate import Evaluator
from autocompress.policy import Policy
from autocompress.search.config import SearchConfig
from autocompress.search.latency import latency_ms, original_ms, side_by_side_ms
from autocompress.search.objectives import COST_KEYS
from autocompress.space import SearchSpace
from autocompress.task import Task


@dataclass
class EvaluationSpec:
    """Everything a process needs to evaluate a policy (pickled to worker processes)."""

    model: nn.Module
    task: Task
    space: SearchSpace
    evaluator: dict[str, Any] = field(default_factory=dict)  # Evaluator keyword arguments
    latency: dict[str, Any] | None = None  # {"batch": 32, "threads": 1, "repeats": 30} to measure ORT latency
    threads: int | None = None  # torch threads in a worker process
    elastic: Any = None  # APQ: an autocompress.elastic.ElasticSpace for policies naming a sub-network (policy.arch)

    def target(self, policy: Policy) -> tuple[nn.Module, SearchSpace]:
        """The model ``policy`` applies to and its space: the search's, or the sub-network ``policy.arch``."""
        if policy.arch is None:
            return self.model, self.space
        if self.elastic is None:
            raise ValueError("the policy names a sub-network (arch); the search needs search(..., elastic=supernet)")
        return self.elastic.subnet(policy.arch)


_EVALUATORS: dict[int, Evaluator] = {}


def _evaluator(spec: EvaluationSpec) -> Evaluator:
    key = id(spec)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(spec.task, **spec.evaluator)
    return _EVALUATORS[key]


def original_values(spec: EvaluationSpec) -> dict[str, float]:
    metric, cost = _evaluator(spec).baseline(spec.model, spec.space.output)
    values = {"metric": metric, "metric_before_finetune": metric, "metric_original": metric, "accuracy_drop": 0.0}
    values.update({k: float(v) for k, v in cost.as_dict().items()})
    values.update({f"{k}_ratio": 1.0 for k in COST_KEYS})
    if spec.latency:
        values["latency_ms"] = original_ms(spec)
        values["latency_ratio"] = 1.0
    return values


def evaluate_values(spec: EvaluationSpec, policy: Policy) -> dict[str, float]:
    """Evaluate one policy; the values stored in the study (raises on failure or NaN)."""
    model, space = spec.target(policy)
    result = _evaluator(spec).evaluate(model, policy, space=space)
    if not math.isfinite(result.metric):
        raise FloatingPointError(f"the metric is {result.metric}")
    metric_original, original_cost = _evaluator(spec).baseline(spec.model, spec.space.output)  # a sub-network's too: the search's model
    values = {
        "metric": result.metric,
        "metric_before_finetune": result.metric_before_finetune,
        "metric_original": metric_original,
        "accuracy_drop": metric_original - result.metric,
    }
    values.update({k: float(v) for k, v in result.cost.as_dict().items()})
    values.update({f"{k}_ratio": float(v) for k, v in result.cost.ratio_to(original_cost).items()})
    if spec.latency:
        side_by_side = side_by_side_ms(spec, result.model)
        if side_by_side is not None:  # both timed in one interleaved run: the ratio holds on a busy machine
            values["latency_ms"], values["latency_ratio"] = side_by_side
        else:
            values["latency_ms"] = latency_ms(spec, result.model)
            values["latency_ratio"] = values["latency_ms"] / original_ms(spec)
    return values


def run_candidate(spec: EvaluationSpec, policy: Policy) -> tuple[dict[str, float] | None, str | None, float]:
    """Evaluate in this process; errors come back as text (with the last frame) instead of raising."""
    start = time.perf_counter()
    try:
        return evaluate_values(spec, policy), None, time.perf_counter() - start
    except Exception as error:  # noqa: BLE001
        where = traceback.extract_tb(error.__traceback__)[-1]
        return None, f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})", time.perf_counter() - start


def elastic_space(supernet: nn.Module, task: Task, reference: nn.Module, settings: dict[str, Any]) -> Any:
    """The :class:`~autocompress.elastic.ElasticSpace` evaluations use for policies naming a sub-network."""
    from autocompress.elastic import ElasticSpace

    return ElasticSpace(supernet, task, reference=reference, bn_batches=settings.get("bn_batches", 20),
                        split=settings.get("split", "val"), seed=settings.get("seed", 0))


def spec_from_config(config: SearchConfig) -> EvaluationSpec:
    """What a process needs to evaluate (or rebuild) the candidates of a search a configuration describes."""
    model, task, space = config.build()
    settings = config.evaluator_kwargs()
    spec = EvaluationSpec(model=model, task=task, space=space, evaluator=settings,
                          latency=config.latency.model_dump() if config.latency else None)
    supernet = config.load_elastic()
    if supernet is not None:
        spec.elastic = elastic_space(supernet, task, model, settings)
    return spec
