"""Per-layer sensitivity sweep: every gene alone, the rest of the model untouched.

For each ``(layer, field)`` gene of ``ctx.space.genes`` whose field is swept, the policy
that sets that one gene to a candidate value (every other gene at its identity value) is
evaluated through ``ctx.evaluate_many`` — so the sweep is cached, counted in the budget
and run in parallel like any other candidates. Its records are tagged
``phase="sensitivity"``.

**Cost**: (#genes swept) × (#values per gene) evaluations, i.e. #layers × #values for one
field (the identity value — prune 0, rank 1, 32 bits — is never evaluated: it is the
original model). With the default choices (9 prune values) a 10-layer model costs 90.

**When it does not fit** in ``max_evals`` (default: ``ctx.budget``, the total budget over
every resume, so that a resumed search plans the same sweep), it is coarsened by one rule:

1. ``k = max_evals // #genes`` values per gene, at the fractions ``1/(k+1) .. k/(k+1)`` of
   the gene's ladder (mildest to most aggressive; ``k = 1``: its middle value) — the
   extremes are the least informative (the most aggressive value tends to break any layer);
2. if ``k == 0``, only the ``max_evals`` genes whose middle value saves the most analytic
   cost are swept, at that one value; the others are not swept at all.

The rule is reported through ``ctx.log``. A ``cost`` key (``"flops"``, ``"bitops"``, ...)
drops, before anything is evaluated, the values that do not make the model cheaper on
their own (e.g. rank 0.75 of a square layer costs more than the dense layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autocompress.policy import LayerGenes, Policy
from autocompress.search.objectives import Record
from autocompress.search.strategies.base import SearchContext
from autocompress.space import SearchSpace

Curves = dict[tuple[str, str], list[tuple[float, Record]]]
IDENTITY: dict[str, float] = {f: float(v) for f, v in LayerGenes().model_dump().items()}


def ladder(field: str, choices: Sequence[float]) -> list[float]:
    """Non-identity ``choices`` from the mildest to the most aggressive."""
    values = sorted({float(c) for c in choices} - {IDENTITY[field]})
    return values if field == "prune" else values[::-1]


def single_gene_policy(space: SearchSpace, layer: str, field: str, value: float) -> Policy:
    """The policy that changes only ``layer``'s ``field`` (snapped to a legal choice)."""
    vector = space.encode(Policy())
    vector[gene_index(space)[(layer, field)]] = value
    return space.decode(vector)


def gene_index(space: SearchSpace) -> dict[tuple[str, str], int]:
    """``(layer, field) -> position`` in ``space.genes`` (and in encoded vectors)."""
    return {(g.layer, g.field): i for i, g in enumerate(space.genes)}


def _spread(values: list[float], k: int) -> list[float]:
    """``k`` values of a ladder at the fractions ``1/(k+1) .. k/(k+1)`` of its length."""
    if k >= len(values):
        return list(values)
    picks = sorted({min(len(values), max(1, math.floor((i + 1) * (len(values) + 1) / (k + 1) + 0.5))) - 1 for i in range(k)})
    return [values[i] for i in picks]


def sweep_plan(
    ctx: SearchContext,
    fields: Sequence[str] = ("prune",),
    ratios: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    *,
    max_evals: int | None = None,
    cost: str | None = None,
) -> dict[tuple[str, str], list[float]]:
    """The values :func:`sensitivity_sweep` would evaluate, per gene (nothing is evaluated)."""
    space = ctx.space
    unknown = set(fields) - set(IDENTITY)
    if unknown:
        raise ValueError(f"sensitivity fields must be among {list(IDENTITY)}, got {sorted(unknown)}")
    base_cost = getattr(ctx.cost(Policy()), cost) if cost else 0.0
    plan: dict[tuple[str, str], list[float]] = {}
    for gene in space.genes:
        if gene.field not in fields:
            continue
        wanted = ratios.get(gene.field) if isinstance(ratios, Mapping) else ratios
        choices = gene.choices if wanted is None else [min(gene.choices, key=lambda c, v=v: (abs(c - v), c)) for v in wanted]
        values = ladder(gene.field, choices)
        if cost:
            values = [v for v in values if getattr(ctx.cost(single_gene_policy(space, gene.layer, gene.field, v)), cost) < base_cost]
        if values:
            plan[(gene.layer, gene.field)] = values
    limit = ctx.budget if max_evals is None else int(max_evals)
    needed = sum(len(v) for v in plan.values())
    if needed <= limit or not plan:
        return plan
    per_gene = limit // len(plan)
    if per_gene >= 1:
        ctx.log(
            f"sensitivity: the full sweep needs {needed} evaluations, at most {limit} allowed; "
            f"sweeping {per_gene} value(s) per gene, evenly spaced inside its ladder"
        )
        return {key: _spread(values, per_gene) for key, values in plan.items()}
    key_cost = cost or "flops"
    middle = {key: _spread(values, 1) for key, values in plan.items()}
    savings = {key: -getattr(ctx.cost(single_gene_policy(space, *key, middle[key][0])), key_cost) for key in plan}
    chosen = sorted(plan, key=lambda key: (-savings[key], list(plan).index(key)))[: max(0, limit)]
    ctx.log(
        f"sensitivity: {len(plan)} genes but at most {limit} evaluations; sweeping only the {len(chosen)} genes "
        f"whose middle value saves the most {key_cost}, at that value; the others are not swept"
    )
    return {key: middle[key] for key in plan if key in chosen}


def sensitivity_sweep(
    ctx: SearchContext,
    fields: Sequence[str] = ("prune",),
    ratios: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    *,
    max_evals: int | None = None,
    cost: str | None = None,
    **tags: Any,
) -> Curves:
    """Evaluate every gene of ``fields`` alone at each candidate value.

    ``ratios``: candidate values for every field, or ``{field: values}`` (snapped to the
    gene's legal choices); default: the gene's legal choices without the identity value.
    ``max_evals`` and ``cost``: see the module docstring. Returns
    ``{(layer, field): [(value, record), ...]}`` with values from the mildest to the most
    aggressive; a record is "skipped" where the budget ran out, "failed" where the
    evaluation failed.
    """
    plan = sweep_plan(ctx, fields, ratios, max_evals=max_evals, cost=cost)
    keys = [(key, value) for key, values in plan.items() for value in values]
    layers = len({layer for layer, _ in plan})
    ctx.log(f"sensitivity: {layers} layers, {len(plan)} genes ({', '.join(fields)}), {len(keys)} evaluations")
    policies = [single_gene_policy(ctx.space, layer, field, value) for (layer, field), value in keys]
    records = ctx.evaluate_many(policies, **{"phase": "sensitivity", **tags}) if policies else []
    curves: Curves = {key: [] for key in plan}
    for (key, value), record in zip(keys, records, strict=True):
        curves[key].append((value, record))
    return curves


def curve_metrics(curves: Curves) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """``{(layer, field): [(value, metric), ...]}`` for the completed records only."""
    return {key: [(v, r.values["metric"]) for v, r in points if r.ok and "metric" in r.values] for key, points in curves.items()}


def valid_values(ctx: SearchContext, curves: Curves, fields: Sequence[str], floor: float, cost: str | None = None) -> list[list[float]]:
    """Per gene of ``ctx.space.genes`` (in order): its identity value and the values that pass.

    A swept value passes when its record completed with ``metric >= floor``; a value the
    (coarsened) sweep skipped is judged by the next more aggressive swept value of its
    ladder, and fails if there is none. With ``cost``, values that do not lower that cost
    on their own are left out. Lists are sorted by value.
    """
    valid = [[IDENTITY[g.field]] for g in ctx.space.genes]
    index = gene_index(ctx.space)
    for key, values in sweep_plan(ctx, fields, max_evals=10**12, cost=cost).items():
        passed = {v: r.ok and r.values.get("metric", -math.inf) >= floor for v, r in curves.get(key, [])}
        for i, value in enumerate(values):  # mild -> aggressive
            judge = next((v for v in values[i:] if v in passed), None)
            if judge is not None and passed[judge]:
                valid[index[key]].append(value)
    return [sorted(v) for v in valid]


def monotone(metrics: Sequence[float]) -> list[float]:
    """Running minimum along a ladder: a more aggressive value never scores higher."""
    return list(np.minimum.accumulate(np.asarray(metrics, dtype=float))) if len(metrics) else []


__all__ = ["IDENTITY", "Curves", "curve_metrics", "gene_index", "ladder", "monotone", "sensitivity_sweep", "single_gene_policy", "sweep_plan", "valid_values"]
