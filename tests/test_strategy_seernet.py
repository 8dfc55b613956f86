"""seernet: labels, informative rounds, one optimized policy per budget (exactly within it); replay is free."""

from __future__ import annotations

import pytest
import torch
from fake_search import FakeContext, Net, records_of

from autocompress.search.strategies.seernet import SeerNetStrategy
from autocompress.space import SearchSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    torch.manual_seed(0)
    return SearchSpace.from_model(Net(), torch.randn(2, 1, 20), methods=["prune", "quant"])


def test_seernet_labels_then_optimizes_each_budget(space):
    cache: dict = {}
    ctx = FakeContext(space, budget=40, cache=cache)
    strategy = SeerNetStrategy(["bitops_ratio<=0.1", 0.02], cost="bitops", initial=10, rounds=2, batch=5, kind="gp")
    strategy.run(ctx)
    assert len(records_of(ctx, phase="label")) == 10 and len(records_of(ctx, phase="select")) == 10
    optimized = records_of(ctx, phase="optimize")
    assert [r.tags["target"] for r in optimized] == ["bitops_ratio<=0.1", "bitops_ratio<=0.02"]
    for record, bound in zip(optimized, (0.1, 0.02), strict=True):
        assert record.values["bitops_ratio"] <= bound
    labels = records_of(ctx, phase="label")
    best_label_at_10 = max((r.values["metric"] for r in labels if r.values["bitops_ratio"] <= 0.1), default=0)
    assert optimized[0].values["metric"] >= best_label_at_10 - 1.0  # the optimum is no worse than a random label there
    again = FakeContext(space, budget=40, cache=cache)
    strategy.run(again)
    assert again.real == [] and again.requested == ctx.requested


def test_seernet_reports_an_unreachable_budget(space):
    ctx = FakeContext(space, budget=20)
    SeerNetStrategy(["bitops_ratio<=1e-9"], cost="bitops", initial=6, rounds=0, kind="linear").run(ctx)
    assert records_of(ctx, phase="optimize") == []
    assert any("smallest reachable" in m for m in ctx.logs)


def test_predictor_guided_evolution_beats_random_at_equal_budget(space):
    from autocompress.search.strategies.predicted_evolution import PredictedEvolutionStrategy
    from autocompress.search.strategies.random_search import RandomStrategy

    def best_under(ctx, ratio):
        return max((r.values["metric"] for r in ctx.cache.values() if r.values["bitops_ratio"] <= ratio), default=0.0)

    guided, plain = FakeContext(space, budget=30), FakeContext(space, budget=30)
    PredictedEvolutionStrategy(cost="bitops", initial=10, batch=5, population=32, generations=8, kind="gp").run(guided)
    RandomStrategy().run(plain)
    assert len(guided.real) == 30 and len({k for k in guided.real}) == 30
    assert {r.tags["phase"] for r in guided.cache.values()} == {"label", "predicted"}
    assert sum(best_under(guided, t) for t in (0.3, 0.1, 0.03)) > sum(best_under(plain, t) for t in (0.3, 0.1, 0.03))
    again = FakeContext(space, budget=30, cache=guided.cache)
    PredictedEvolutionStrategy(cost="bitops", initial=10, batch=5, population=32, generations=8, kind="gp").run(again)
    assert again.real == []
