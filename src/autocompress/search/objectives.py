"""Objectives, constraints and the record of one evaluated candidate.

A candidate's measured values are stored under these keys (all per sample):

- ``metric`` (the task metric after fine-tuning, or before if there was none), ``metric_before_finetune``,
  ``metric_original`` and ``accuracy_drop`` (= metric_original - metric);
- ``flops``, ``macs``, ``params``, ``bitops``, ``bytes`` and their ratios to the original model,
  ``flops_ratio``, ``macs_ratio``, ``params_ratio``, ``bitops_ratio``, ``bytes_ratio``;
- ``latency_ms`` and ``latency_ratio`` when latency is measured.

An objective name maps to one key and a direction: ``accuracy``/``metric`` are maximized,
every cost is minimized. Constraints use the one budget grammar of :mod:`autocompress.budget`,
e.g. ``"accuracy_drop<=1.0"``, ``"flops_ratio<=0.1"`` or ``"latency_ratio<=0.5"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autocompress.budget import COST_KEYS, KEYS, Constraint
from autocompress.policy import Policy

__all__ = ["COST_KEYS", "OBJECTIVES", "VALUE_KEYS", "Constraint", "Objective", "Record", "parse_objectives"]

OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("metric", "maximize"),
    "metric": ("metric", "maximize"),
    **{name: (name, "minimize") for name in COST_KEYS},
    "latency": ("latency_ms", "minimize"),
}
VALUE_KEYS = KEYS


@dataclass(frozen=True)
class Objective:
    name: str
    key: str
    direction: str  # "maximize" | "minimize"

    @classmethod
    def parse(cls, name: str) -> Objective:
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
        key, direction = OBJECTIVES[name]
        return cls(name, key, direction)

    def sign(self) -> float:
        """+1 to minimize the value as is, -1 to minimize its negation."""
        return 1.0 if self.direction == "minimize" else -1.0


def parse_objectives(names: tuple[str, ...] | list[str]) -> tuple[Objective, ...]:
    objectives = tuple(Objective.parse(n) for n in names)
    if not 1 <= len(objectives) <= 3:
        raise ValueError(f"give 1 to 3 objectives, got {len(objectives)}: {list(names)}")
    if len({o.key for o in objectives}) != len(objectives):
        raise ValueError(f"objectives repeat a quantity: {list(names)}")
    return objectives


@dataclass(frozen=True)
class Record:
    """One candidate of a study: its policy, state and measured values."""

    number: int
    policy: Policy
    state: str  # "complete", "failed", "running" or "waiting"
    values: dict[str, float] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)  # strategy, phase, generation, ...
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "complete"

    def objective_values(self, objectives: tuple[Objective, ...]) -> list[float]:
        return [self.values[o.key] for o in objectives]
