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


def test_stratified_first_labels_fill_a_spread_of_ratios(space):
    from autocompress.policy import Policy
    from autocompress.search.ladders import (
        spread_order,
        stratified_policies,
        uniform_policy,
    )

    assert spread_order(8) == [3, 0, 7, 1, 5, 2, 4, 6]
    assert all(sorted(spread_order(n)) == list(range(n)) for n in range(12))
    ratios = [0.3, 0.1, 0.03]
    policies = stratified_policies(space, ratios, "bitops", ("prune", "weight_bits", "act_bits"), rng=0)
    base = space.cost(Policy()).bitops
    assert policies[0] == uniform_policy(space, 0.3, "bitops", ("prune", "weight_bits", "act_bits"))
    for policy, ratio in zip(policies, ratios, strict=True):
        assert 0.5 * ratio * base <= space.cost(policy).bitops <= ratio * base
    assert len({p.to_json() for p in policies}) == 3


def test_seernet_varies_only_the_genes_its_cost_counts(space):
    ctx = FakeContext(space, budget=16)
    SeerNetStrategy([0.3, 0.05], cost="flops", initial=6, rounds=1, batch=4, kind="gp").run(ctx)
    evaluated = list(ctx.cache.values())
    assert len(evaluated) == 12
    bits = [i for i, g in enumerate(space.genes) if g.field.endswith("bits")]
    assert all((space.encode(r.policy)[bits] == 32).all() for r in evaluated)  # bits do not change FLOPs
    assert len({space.encode(r.policy)[[i for i in range(len(space.genes)) if i not in bits]].tobytes()
                for r in evaluated}) == 12


def test_fit_predictor_takes_the_original_as_a_free_label(space):
    import numpy as np

    from autocompress.policy import Policy
    from autocompress.predict import policy_features
    from autocompress.search.strategies.seernet import fit_predictor

    ctx = FakeContext(space, budget=12)
    records = ctx.evaluate_many([space.random_policy(np.random.default_rng(i)) for i in range(12)])
    with_anchor = fit_predictor(space, records, 98.0, kind="gp")
    identity = policy_features(space, [Policy()])
    assert with_anchor.predict(identity)[0] == pytest.approx(98.0, abs=0.3)
    with pytest.raises(RuntimeError, match="fewer than 2 successful"):
        fit_predictor(space, records[:1], 98.0, who="seernet")
