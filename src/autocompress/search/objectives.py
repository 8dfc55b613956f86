"""Objectives, constraints and the record of one evaluated candidate.

A candidate's measured values are stored under these keys (all per sample):

- ``metric`` (the task metric after fine-tuning, or before if there was none), ``metric_before_finetune``,
  ``metric_original`` and ``accuracy_drop`` (= metric_original - metric);
- ``flops``, ``macs``, ``params``, ``bitops``, ``bytes`` and their ratios to the original model,
  ``flops_ratio``, ``macs_ratio``, ``params_ratio``, ``bitops_ratio``, ``bytes_ratio``;
- ``latency_ms`` when latency is measured.

An objective name maps to one key and a direction: ``accuracy``/``metric`` are maximized,
every cost is minimized. Constraints are written ``"<key> <op> <number>"`` with op one of
``<=, <, >=, >``, e.g. ``"accuracy_drop<=1.0"`` or ``"flops_ratio<=0.1"``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

from autocompress.policy import Policy

COST_KEYS = ("flops", "macs", "params", "bitops", "bytes")
OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("metric", "maximize"),
    "metric": ("metric", "maximize"),
    **{name: (name, "minimize") for name in COST_KEYS},
    "latency": ("latency_ms", "minimize"),
}
VALUE_KEYS = (
    "metric",
    "metric_before_finetune",
    "metric_original",
    "accuracy_drop",
    *COST_KEYS,
    *(f"{k}_ratio" for k in COST_KEYS),
    "latency_ms",
)
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


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
class Constraint:
    key: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = re.fullmatch(r"\s*([a-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", text)
        if not match:
            raise ValueError(f"constraint {text!r} is not of the form '<key> <op> <number>' (op: <=, <, >=, >)")
        key, op, number = match.groups()
        key = OBJECTIVES.get(key, (key, ""))[0]
        if key not in VALUE_KEYS:
            raise ValueError(f"constraint {text!r}: unknown quantity {key!r}; allowed: {', '.join(VALUE_KEYS)}")
        try:
            bound = float(number)
        except ValueError:
            raise ValueError(f"constraint {text!r}: {number!r} is not a number") from None
        return cls(key, op, bound)

    def satisfied(self, values: dict[str, float]) -> bool:
        value = values.get(self.key)
        return value is not None and _OPS[self.op](value, self.bound)

    def violation(self, values: dict[str, float]) -> float:
        """How far ``values`` is from satisfying it (0 when satisfied; inf when not measured)."""
        value = values.get(self.key)
        if value is None:
            return float("inf")
        return 0.0 if _OPS[self.op](value, self.bound) else abs(value - self.bound)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.bound:g}"


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
