"""``uniform``: the same genes on every layer, swept along the cost axis (a baseline).

The grid is every combination of the legal choices of ``fields`` (activation bits follow
weight bits: 8 when weights are quantized); when it holds more policies than the budget,
policies evenly spaced in analytic cost are kept, cheapest last.
"""

from __future__ import annotations

import itertools

import numpy as np

from autocompress.policy import Policy
from autocompress.search.strategies.base import SearchContext, Strategy

FIELDS = ("prune", "rank", "weight_bits")


class UniformStrategy(Strategy):
    name = "uniform"

    def __init__(self, fields: tuple[str, ...] | list[str] = ("prune",), cost: str = "flops") -> None:
        unknown = set(fields) - set(FIELDS)
        if not fields or unknown:
            raise ValueError(f"uniform: fields must be a non-empty subset of {list(FIELDS)}, got {list(fields)}")
        self.fields = tuple(fields)
        self.cost = cost

    def grid(self, ctx: SearchContext) -> list[Policy]:
        choices = [sorted(set(ctx.space.choices[f]), reverse=f != "prune") for f in self.fields]
        policies = []
        for combo in itertools.product(*choices):
            genes = dict(zip(self.fields, combo, strict=True))
            if "weight_bits" in genes:
                genes["act_bits"] = 32 if genes["weight_bits"] == 32 else 8
            policies.append(Policy.uniform(ctx.space, **genes))
        costs = [getattr(ctx.cost(p), self.cost) for p in policies]
        order = np.argsort(costs, kind="stable")[::-1]
        return [policies[i] for i in order]

    def run(self, ctx: SearchContext) -> None:
        grid = self.grid(ctx)
        budget = ctx.budget  # not remaining(): a resumed run must pick the same grid
        if len(grid) > budget > 0:
            keep = np.unique(np.linspace(0, len(grid) - 1, budget).round().astype(int))
            grid = [grid[i] for i in keep]
        ctx.evaluate_many(grid, phase="sweep")
