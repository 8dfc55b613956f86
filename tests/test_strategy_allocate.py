"""allocate: every candidate fills its cost target; evolution beats the uniform allocation; replay is free."""

from __future__ import annotations

import pytest
import torch
from fake_search import FakeContext, Net, key_of, records_of, synthetic_accuracy

from autocompress.policy import Policy
from autocompress.search import search
from autocompress.search.objectives import Constraint
from autocompress.search.strategies import make_strategy
from autocompress.search.strategies.allocate import AllocateStrategy
from autocompress.space import SearchSpace
from autocompress.zoo import load_zoo

FINE = tuple(round(0.05 * i, 2) for i in range(19))  # 0 .. 0.9 in steps of 0.05


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    torch.manual_seed(0)
    return SearchSpace.from_model(Net(), torch.randn(2, 1, 20), prune_choices=FINE, methods=["prune", "lowrank"])


def test_every_candidate_fills_the_target_and_the_first_is_uniform(space):
    ctx = FakeContext(space, budget=24)
    AllocateStrategy(["flops_ratio<=0.4"], population=6).run(ctx)
    records = records_of(ctx, phase="allocate")
    assert len(records) == len(ctx.real) == 24
    assert len({key_of(r.policy) for r in records}) == 24  # no candidate twice
    for r in records:
        assert r.tags["target"] == "flops_ratio<=0.4"
        assert 0.34 < r.values["flops_ratio"] <= 0.4  # on the budget, not anywhere below it
    first = records[0].policy
    prunes = {first.genes(n).prune for n in space.layers if space.layers[n].prunable}
    assert len(prunes) == 1 and prunes.pop() > 0  # the uniform allocation, one ratio for every layer
    assert records[0].tags["generation"] == 0 and records[-1].tags["generation"] == 3


def test_evolution_finds_a_better_allocation_than_uniform(space):
    ctx = FakeContext(space, budget=40)
    AllocateStrategy(["flops_ratio<=0.4"], population=8, sigma=0.5).run(ctx)
    records = records_of(ctx, phase="allocate")
    uniform, best = records[0], max(records, key=lambda r: r.values["metric"])
    assert best.values["metric"] > uniform.values["metric"] + 1.0
    # conv1 is the most sensitive layer of the synthetic metric: the best allocation spares it
    assert best.policy.genes("conv1").prune < uniform.policy.genes("conv1").prune
    assert best.values["metric"] == pytest.approx(synthetic_accuracy(best.policy))


def test_budget_is_shared_between_targets_and_a_resume_replays_for_free(space):
    strategy = AllocateStrategy([0.6, "flops_ratio<=0.3"], population=4)
    whole = FakeContext(space, budget=20)
    strategy.run(whole)
    by_target = {t: records_of(whole, target=t) for t in ("flops_ratio<=0.6", "flops_ratio<=0.3")}
    assert [len(v) for v in by_target.values()] == [10, 10]
    assert all(r.values["flops_ratio"] <= 0.3 for r in by_target["flops_ratio<=0.3"])
    cache: dict = {}
    killed = FakeContext(space, budget=20, cache=cache)
    killed.remaining = lambda: max(0, 13 - len(cache))  # the run dies after 13 evaluations
    strategy.run(killed)
    resumed = FakeContext(space, budget=20, cache=cache)
    strategy.run(resumed)
    assert len(killed.real) == 13 and len(resumed.real) == 7  # nothing evaluated twice
    assert resumed.requested[:20] == whole.requested  # the same proposals as the uninterrupted run
    assert list(cache) == whole.real


def test_the_remainder_and_an_unreachable_targets_share_are_spent_on_the_others(space):
    ctx = FakeContext(space, budget=9)
    AllocateStrategy([0.6, 0.3], population=4).run(ctx)  # 9 = 5 + 4: the loosest takes the remainder
    assert [len(records_of(ctx, target=t)) for t in ("flops_ratio<=0.6", "flops_ratio<=0.3")] == [5, 4]
    ctx = FakeContext(space, budget=9)
    AllocateStrategy([0.6, 0.001, 0.3], population=4).run(ctx)  # 0.001 is out of reach: the others share all 9
    assert [len(records_of(ctx, target=t)) for t in ("flops_ratio<=0.6", "flops_ratio<=0.3")] == [5, 4]
    assert len(ctx.real) == 9


def test_an_unreachable_target_is_said_with_the_closest_cost(space):
    ctx = FakeContext(space, budget=10)
    AllocateStrategy(["flops_ratio<=0.001"]).run(ctx)
    assert ctx.real == []
    (message,) = [m for m in ctx.logs if "not reachable" in m]
    closest = float(message.split("flops_ratio=")[1].split(";")[0])
    everything = Policy(layers={n: {"prune": max(FINE)} for n in space.layers if space.layers[n].prunable})  # prune only
    assert closest == pytest.approx(space.cost(everything).flops / space.cost(Policy()).flops, rel=1e-3)


def test_targets_default_to_the_search_constraints_and_errors_name_the_fix(space):
    ctx = FakeContext(space, budget=6)
    ctx.constraints = (Constraint.parse("macs_ratio<=0.5"), Constraint.parse("accuracy_drop<=2"))
    AllocateStrategy().run(ctx)
    assert {r.tags["target"] for r in records_of(ctx, phase="allocate")} == {"macs_ratio<=0.5"}
    with pytest.raises(ValueError, match="no cost target"):
        AllocateStrategy().run(FakeContext(space, budget=6))
    with pytest.raises(ValueError, match="fields must be"):
        make_strategy("allocate", fields=["width"])
    with pytest.raises(ValueError, match="must bound a cost"):
        make_strategy("allocate", targets=["accuracy_drop<=1"])


def test_allocate_in_a_real_search_meets_the_constraint(tmp_path):
    wine = load_zoo("wine-mlp", pretrained=True, seed=0)
    study = search(wine.model, wine.task, strategy="allocate", constraints=["flops_ratio<=0.3"], budget=6,
                   storage=tmp_path / "a.db", progress=False, strategy_params={"population": 3})
    done = study.completed()
    assert len(done) == 6 and all(0.2 < r.values["flops_ratio"] <= 0.3 for r in done)
    assert study.best(["flops_ratio<=0.3"], objective="accuracy").values["flops_ratio"] <= 0.3
