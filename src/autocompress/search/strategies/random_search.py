"""``random``: policies drawn uniformly from every gene's legal choices (a baseline)."""

from __future__ import annotations

from autocompress.search.strategies.base import SearchContext, Strategy


class RandomStrategy(Strategy):
    """Draw ``batch`` random policies at a time until the budget is spent."""

    name = "random"

    def __init__(self, batch: int = 8) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch = batch

    def run(self, ctx: SearchContext) -> None:
        while ctx.remaining() > 0:
            policies = [ctx.space.random_policy(ctx.rng) for _ in range(self.batch)]
            records = ctx.evaluate_many(policies)
            if all(r.state == "skipped" for r in records):
                return
