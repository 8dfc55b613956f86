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


# ---------------------------------------------------------------------- measured latency
WEIGHTS = {"conv1": 1.0, "conv2": 1.0, "conv3": 4.0, "fc1": 0.2, "fc2": 1.0}  # ms per MAC differs between layers


class FakeLatency:
    """MeasuredLatency's interface on a synthetic latency that is not proportional to FLOPs; counts its runs."""

    def __init__(self, space: SearchSpace) -> None:
        from autocompress.search.ladders import at_strength, gene_ladders

        self.space, self.runs = space, 0
        ladders = gene_ladders(space, ("prune",))
        base = space.cost(Policy()).flops
        self.points = [(1.0, 1.0)] + [(space.cost(p).flops / base, self.ratio(p))
                                      for p in (at_strength(space, ladders, [0.0] * len(ladders), s) for s in (0.2, 0.4, 0.6, 0.8, 1.0))]

    def ms(self, policy: Policy) -> float:
        cost = self.space.cost(policy)
        return 0.05 + sum(WEIGHTS[layer.name] * layer.macs for layer in cost.layers) * 1e-5

    def ratio(self, policy: Policy) -> float:
        return self.ms(policy) / self.ms(Policy())

    def flops_guess(self, latency_ratio: float) -> float | None:
        from autocompress.hardware.measured_path import flops_for

        return flops_for(self.points, latency_ratio)[0]

    def fastest(self) -> float:
        return min(p[1] for p in self.points)

    def ratios(self, policies: list[Policy]) -> list[float]:
        self.runs += 1
        return [self.ratio(p) for p in policies]


def test_a_measured_latency_target_is_filled_by_measurement_and_replayed_on_resume(space):
    latency = FakeLatency(space)
    ctx = FakeContext(space, budget=16)
    AllocateStrategy(["latency_ratio<=0.4"], population=4, latency=latency, fields=("prune",)).run(ctx)
    records = records_of(ctx, phase="allocate")
    assert len(records) == 16 and {r.tags["target"] for r in records} == {"latency_ratio<=0.4"}
    measured = [latency.ratio(r.policy) for r in records]
    assert all(0.3 < m <= 0.4 for m in measured)  # on the latency budget (the bracket's FLOPs steps are ~13 %)
    flops = [r.values["flops_ratio"] for r in records]
    assert max(flops) - min(flops) > 0.05  # equal latency is not equal FLOPs
    assert latency.runs >= 16 and ctx.store  # one side-by-side run per projection, every run kept in the study
    cache: dict = {}
    other = FakeLatency(space)
    killed = FakeContext(space, budget=16, cache=cache)
    killed.remaining = lambda: max(0, 9 - len(cache))  # the run dies after 9 evaluations
    AllocateStrategy(["latency_ratio<=0.4"], population=4, latency=other, fields=("prune",)).run(killed)
    resumed = FakeContext(space, budget=16, cache=cache)
    resumed.store = killed.store
    AllocateStrategy(["latency_ratio<=0.4"], population=4, latency=other, fields=("prune",)).run(resumed)
    assert len(resumed.real) == 7 and resumed.requested[:16] == ctx.requested  # the same proposals
    assert other.runs == latency.runs  # a projection measured before the kill is read back, not measured again


def test_measured_latency_finds_more_accurate_models_at_equal_latency_than_flops(space):
    """The FLOPs budget at which the uniform policy meets the latency target: allocations on it land on either
    side of the latency target; filled by measurement, every candidate meets it and the best is better."""
    latency, bound = FakeLatency(space), 0.4

    def best_meeting(strategy: AllocateStrategy) -> tuple[float, int]:
        ctx = FakeContext(space, budget=24)
        strategy.run(ctx)
        meeting = [r.values["metric"] for r in records_of(ctx, phase="allocate") if latency.ratio(r.policy) <= bound]
        return max(meeting), len(meeting)

    flops_target = f"flops_ratio<={latency.flops_guess(bound):.6g}"
    by_flops = best_meeting(AllocateStrategy([flops_target], population=6, sigma=0.5, fields=("prune",)))
    by_latency = best_meeting(AllocateStrategy([f"latency_ratio<={bound}"], population=6, sigma=0.5, fields=("prune",), latency=latency))
    assert by_latency[1] == 24 and by_flops[1] < 24
    assert by_latency[0] > by_flops[0]


def test_an_unreachable_measured_latency_target_evaluates_nothing(space):
    latency = FakeLatency(space)
    ctx = FakeContext(space, budget=8)
    AllocateStrategy(["latency_ratio<=0.01"], latency=latency, fields=("prune",)).run(ctx)
    assert ctx.real == [] and latency.runs == 0
    (message,) = [m for m in ctx.logs if "not reachable" in m]
    assert f"latency_ratio={latency.fastest():.4g}" in message
