"""One budget grammar for targets, constraints, objectives and the command line.

A bound is written ``"<key> <op> <number>"``, ``op`` one of ``<=, <, >=, >``::

    latency_ratio<=0.5     half the original's latency on the target runtime
    latency_ms<=2          2 ms per batch on the target runtime ("2ms" is accepted too)
    flops_ratio<=0.25      a quarter of the original's FLOPs (also macs, params, bitops, bytes)
    params<=1e5            an absolute cost
    accuracy_drop<=1       at most one point of the metric lost

``accuracy`` is another name for ``metric`` and ``latency`` for ``latency_ms``. Every place that
takes a budget (``compress(target=...)``, search constraints, strategy targets, ``autocompress
optimize --budget``, the YAML configuration) parses it here, so one error lists what is allowed.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

__all__ = ["ALIASES", "COST_KEYS", "KEYS", "BudgetError", "Constraint", "parse_bound"]

COST_KEYS = ("flops", "macs", "params", "bitops", "bytes")
ALIASES = {"accuracy": "metric", "latency": "latency_ms"}
KEYS = (
    "metric",
    "metric_before_finetune",
    "metric_original",
    "accuracy_drop",
    *COST_KEYS,
    *(f"{k}_ratio" for k in COST_KEYS),
    "latency_ms",
    "latency_ratio",
)
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_FORM = re.compile(r"\s*([A-Za-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*(ms)?\s*")


class BudgetError(ValueError):
    """A budget that is not ``<key> <op> <number>`` with a known key (the message lists them)."""


def _allowed() -> str:
    return f"allowed keys: {', '.join(KEYS)} (and {', '.join(f'{a} = {k}' for a, k in ALIASES.items())})"


@dataclass(frozen=True)
class Constraint:
    """``key op bound``: a bound on one measured value (see the module docstring for the grammar)."""

    key: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        return parse_bound(text)

    @property
    def is_ratio(self) -> bool:
        """Whether the bound is a ratio of the original model's value."""
        return self.key.endswith("_ratio")

    @property
    def cost(self) -> str | None:
        """The cost it bounds ("flops", ..., "latency"), None for a metric."""
        base = self.key.removesuffix("_ratio").removesuffix("_ms")
        return base if base in (*COST_KEYS, "latency") else None

    @property
    def upper(self) -> bool:
        return self.op in ("<=", "<")

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


def parse_bound(text: str | Constraint) -> Constraint:
    """``"latency_ratio<=0.5"`` -> ``Constraint("latency_ratio", "<=", 0.5)``; BudgetError names what is wrong."""
    if isinstance(text, Constraint):
        return text
    if not isinstance(text, str):
        raise BudgetError(f"a budget is a string such as 'latency_ratio<=0.5', got {type(text).__name__} {text!r}; {_allowed()}")
    match = _FORM.fullmatch(text)
    if not match:
        hint = ""
        if "=" in text and not re.search(r"[<>]=?", text):
            key, _, value = text.partition("=")
            hint = f" (did you mean '{key.strip()}_ratio<={value.strip()}'?)" if key.strip() in (*COST_KEYS, "latency") else ""
        raise BudgetError(f"budget {text!r} is not of the form '<key> <op> <number>', op one of <=, <, >=, >{hint}; {_allowed()}")
    key, op, number, unit = match.groups()
    key = ALIASES.get(key.lower(), key.lower())
    if key not in KEYS:
        raise BudgetError(f"budget {text!r}: unknown key {key!r}; {_allowed()}")
    if unit and key != "latency_ms":
        raise BudgetError(f"budget {text!r}: only latency_ms takes a unit (ms)")
    try:
        bound = float(number)
    except ValueError:
        raise BudgetError(f"budget {text!r}: {number!r} is not a number") from None
    if key.endswith("_ratio") and op in ("<=", "<") and not bound > 0:
        raise BudgetError(f"budget {text!r}: a ratio of the original must be > 0")
    return Constraint(key, op, bound)
