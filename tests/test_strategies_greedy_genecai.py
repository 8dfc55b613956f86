"""greedy and genecai strategies (and the shared sensitivity sweep) on a fast fake search context (fake_search.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fake_search import SENSITIVITY, FakeContext, Net, key_of, records_of, synthetic_accuracy
from torch import nn

from autocompress.policy import Policy
from autocompress.search.objectives import Objective, Record
from autocompress.search.sensitivity import ladder, sensitivity_sweep, sweep_plan
from autocompress.search.strategies.genecai import (
    GeneCAIStrategy,
    archive,
    genecai_fitness,
    roulette,
)
from autocompress.search.strategies.greedy import GreedyStrategy, parse_target
from autocompress.space import SearchSpace


class Deep(nn.Module):
    """Six convs and two Linears: 12 prune/rank genes with the default (finer) choices."""

    def __init__(self) -> None:
        super().__init__()
        channels = [1, 16, 32, 32, 64, 64, 64]
        self.convs = [f"conv{i + 1}" for i in range(6)]
        for i, name in enumerate(self.convs):
            setattr(self, name, nn.Conv1d(channels[i], channels[i + 1], 3, padding=1))
        self.fc1 = nn.Linear(64 * 16, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.convs:
            x = torch.relu(getattr(self, name)(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def deep() -> SearchSpace:
    torch.manual_seed(0)
    return SearchSpace.from_model(Deep(), torch.randn(2, 1, 16))


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    torch.manual_seed(0)
    return SearchSpace.from_model(
        Net(), torch.randn(2, 1, 20), prune_choices=(0.0, 0.25, 0.5, 0.75), rank_choices=(1.0, 0.75, 0.5, 0.25)
    )


def hypervolume(records: list[Record], ref_metric: float, ref_ratio: float = 1.0) -> float:
    """Area dominated by (metric up, flops_ratio down) points, bounded by the reference point."""
    points = sorted((r.values["flops_ratio"], r.values["metric"]) for r in records if r.ok)
    area, best = 0.0, ref_metric
    for i, (ratio, metric) in enumerate(points):
        best = max(best, metric)
        right = points[i + 1][0] if i + 1 < len(points) else ref_ratio
        area += max(0.0, min(right, ref_ratio) - ratio) * (best - ref_metric)
    return area


# ---------------------------------------------------------------- sensitivity
def test_sensitivity_sweep_one_gene_at_a_time(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=100)
    curves = sensitivity_sweep(ctx, ("prune", "rank"))
    layers = [name for name in space.layers if space.layers[name].prunable]
    assert {k for k in curves if k[1] == "prune"} == {(n, "prune") for n in layers}
    assert [v for v, _ in curves[("conv2", "prune")]] == [0.25, 0.5, 0.75]
    assert [v for v, _ in curves[("conv2", "rank")]] == [0.75, 0.5, 0.25]
    assert len(ctx.real) == sum(len(p) for p in curves.values()) == 4 * 3 + 4 * 3  # layers x values
    for (layer, field), points in curves.items():
        for value, record in points:
            assert record.tags["phase"] == "sensitivity"
            changed = {(n, f) for n, g in record.policy.layers.items() for f, v in g.model_dump().items() if v != getattr(Policy().genes(n), f)}
            assert changed == {(layer, field)} and getattr(record.policy.genes(layer), field) == value
    assert ladder("weight_bits", (32, 8, 4, 2)) == [8, 4, 2] and ladder("prune", (0.5, 0.0, 0.25)) == [0.25, 0.5]


def test_sensitivity_sweep_drops_costlier_values_and_coarsens_to_the_budget(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=100)
    plan = sweep_plan(ctx, ("rank",), cost="flops")
    assert ("conv1", "rank") not in plan  # a 1-channel Tucker-2 never saves FLOPs
    assert plan[("conv2", "rank")] == [0.5, 0.25]  # rank 0.75 costs more than the dense conv
    curves = sensitivity_sweep(ctx, ("prune",), max_evals=8)
    assert [[v for v, _ in p] for p in curves.values()] == [[0.25, 0.75]] * 4  # 2 per gene, at 1/3 and 2/3
    assert len(ctx.real) == 8 and any("at most 8 allowed" in m for m in ctx.logs)
    tiny = sweep_plan(ctx, ("prune",), max_evals=2, cost="flops")
    assert tiny == {("conv2", "prune"): [0.5], ("conv3", "prune"): [0.5]}  # conv3 also shrinks fc1's input
    assert any("not swept" in m for m in ctx.logs)


# ---------------------------------------------------------------- greedy
@pytest.mark.parametrize("method", ["aimet", "marginal"])
def test_greedy_meets_a_reachable_target(space: SearchSpace, method: str) -> None:
    ctx = FakeContext(space, budget=200)
    GreedyStrategy("flops_ratio<=0.5", fields=("prune", "rank"), method=method, extra_targets=()).run(ctx)
    (final,) = records_of(ctx, phase="greedy")
    assert final.tags["target"] == "flops_ratio<=0.5"
    assert 0.3 < final.values["flops_ratio"] <= 0.5
    uniform = Policy.uniform(space, prune=0.5)  # the same cost budget, spent evenly, loses more
    assert space.cost(uniform).flops / ctx.base.flops <= 0.5
    assert final.values["metric"] > synthetic_accuracy(uniform) + 2.0


def test_greedy_reports_an_unreachable_target_and_evaluates_the_closest(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=200)
    GreedyStrategy(0.001, fields=("prune",), extra_targets=(0.6,)).run(ctx)
    closest = records_of(ctx, phase="greedy", target="flops_ratio<=0.001")[0]
    everything = Policy(layers={n: {"prune": 0.75} for n in SENSITIVITY if n in space.layers})
    assert closest.policy.layers == space.validate(everything).layers  # the most aggressive swept values
    message = next(m for m in ctx.logs if "not reachable" in m)
    assert f"closest reachable flops_ratio={closest.values['flops_ratio']:.4g}" in message
    assert records_of(ctx, phase="greedy", target="flops_ratio<=0.6")[0].values["flops_ratio"] <= 0.6


def test_greedy_spends_the_slack_on_a_metric_plateau(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=200)
    ctx.evaluate_many = lambda policies, **tags: [  # every policy scores 98: one flat plateau
        Record(i, p, "complete", ctx.values(p, 98.0), dict(tags)) for i, p in enumerate(policies)
    ]
    vector, reached = GreedyStrategy(0.75).select(ctx, [], ctx.base.flops)  # no columns: the original
    assert reached == ctx.base.flops and not space.decode(vector).layers["conv1"].prune
    strategy = GreedyStrategy(0.75, fields=("prune",))
    curves = sensitivity_sweep(ctx, ("prune",), cost="flops")
    for target in (0.75, 0.3):
        _, reached = strategy.select(ctx, strategy.columns(ctx, curves), target * ctx.base.flops)
        assert target - 0.15 < reached / ctx.base.flops <= target  # not the 0.07 of "everything at 0.75"


def test_greedy_metric_threshold_keeps_bad_single_layer_values_out(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=200)
    GreedyStrategy(0.05, 97.0, fields=("prune",), extra_targets=()).run(ctx)
    (final,) = records_of(ctx, phase="greedy")
    for name, genes in final.policy.layers.items():  # every chosen value lost <= 1 point alone
        assert genes.prune == 0 or synthetic_accuracy(Policy(layers={name: {"prune": genes.prune}})) >= 97.0
    assert final.policy.layers["conv1"].prune == 0 and "not reachable" in ctx.logs[-1]


def test_greedy_target_parsing() -> None:
    assert parse_target("bitops_ratio<=0.1", "flops") == ("bitops", 0.1, True)
    assert parse_target("params<=1e5", "flops") == ("params", 1e5, False)
    assert parse_target(0.3, "bytes") == ("bytes", 0.3, True)
    for bad in ("accuracy>=90", "flops_ratio>=0.5", 1.5):
        with pytest.raises(ValueError):
            parse_target(bad, "flops")


# ---------------------------------------------------------------- genecai
def test_fitness_matches_hand_computed_numbers() -> None:
    # saving 0.4, error |90-89|+1 = 2  ->  e^(10*0.4) / 2
    assert genecai_fitness(89, 60, 90, 100, metric_floor=85, coeff=10) == pytest.approx(math.exp(4) / 2)
    # below the floor: error 10 + 1 + e^(85-80)
    assert genecai_fitness(80, 60, 90, 100, metric_floor=85, coeff=10) == pytest.approx(math.exp(4) / (11 + math.exp(5)))
    assert genecai_fitness(95, 120, 90, 100, metric_floor=85) == 0.0  # costlier than the original
    assert genecai_fitness(90, 100, 90, 100, metric_floor=85) == 1.0
    assert roulette([3.0, 1.0, 2.0]).tolist() == [2 / 3, 0.0, 1 / 3] and roulette([5.0, 5.0]).tolist() == [0.5, 0.5]


def test_genecai_valid_ranges_follow_the_single_layer_threshold(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=100)
    strategy = GeneCAIStrategy(max_layer_drop=1.0)
    curves = sensitivity_sweep(ctx, ("prune", "rank"), cost="flops")
    valid = strategy.valid_ranges(ctx, curves, 98.0 - 1.0, "flops")
    positions = {(g.layer, g.field): i for i, g in enumerate(space.genes)}
    excluded = 0
    assert set(curves) == {(n, "prune") for n in SENSITIVITY if n in space.layers} | {(n, "rank") for n in ("conv2", "conv3", "fc1")}
    for key, points in curves.items():
        for value, record in points:
            drop = 98.0 - record.values["metric"]
            assert (value in valid[positions[key]]) == (drop <= 1.0), (key, value, drop)
            excluded += drop > 1.0
    assert excluded >= 3 and valid[positions[("conv1", "prune")]] == [0.0]  # the sensitive layer stays whole
    assert valid[positions[("conv3", "prune")]] == [0.0, 0.25, 0.5, 0.75]
    assert all(valid[positions[(n, "weight_bits")]] == [32.0] for n in space.layers)  # not searched


def test_genecai_stays_in_valid_ranges_and_improves_fitness(deep: SearchSpace) -> None:
    ctx = FakeContext(deep, budget=300)
    strategy = GeneCAIStrategy(population=20)
    strategy.run(ctx)
    assert len(ctx.real) == 300
    sweep = FakeContext(deep, budget=1000, cache=ctx.cache)  # replays the sweep from the cache
    valid = strategy.valid_ranges(sweep, sensitivity_sweep(sweep, ("prune", "rank"), cost="flops"), 97.0, "flops")
    assert not sweep.real and sum(len(v) > 1 for v in valid) == 12
    evolution = records_of(ctx, phase="evolution")
    for record in evolution:
        vector = deep.encode(record.policy)
        assert all(v in valid[i] for i, v in enumerate(vector)), record.policy
    best: dict[int, float] = {}
    for record in evolution:  # fitness with the default floor: metric_original - 3
        g = record.tags["generation"]
        best[g] = max(best.get(g, 0.0), strategy.fitness(record, ctx, "flops", 95.0))
    so_far = np.maximum.accumulate([best[g] for g in sorted(best)])
    assert len(so_far) >= 10
    assert so_far[-1] > 20 * so_far[0]  # e^3: 3 points of FLOPs saved more, at the same error


def test_genecai_beats_random_sampling_on_hypervolume(deep: SearchSpace) -> None:
    budget = 300
    ctx = FakeContext(deep, budget=budget)
    GeneCAIStrategy(population=20).run(ctx)
    sampled = FakeContext(deep, budget=budget)
    genes = [i for i, g in enumerate(deep.genes) if g.field in ("prune", "rank")]
    while sampled.remaining() > 0:  # uniform over the same genes' legal choices
        vector = deep.encode(Policy())
        for i in genes:
            vector[i] = deep.genes[i].choices[sampled.rng.integers(len(deep.genes[i].choices))]
        sampled.evaluate(deep.decode(vector))
    hv_genecai = hypervolume(list(ctx.cache.values()), ref_metric=90.0)
    hv_random = hypervolume(list(sampled.cache.values()), ref_metric=90.0)
    assert hv_genecai > 2 * hv_random, (hv_genecai, hv_random)


def test_genecai_initial_population_rejection_sampling(deep: SearchSpace) -> None:
    ctx = FakeContext(deep, budget=200)
    GeneCAIStrategy(population=10, generations=2, cost_window=(0.2, 0.5)).run(ctx)
    first = records_of(ctx, phase="evolution", generation=0)
    assert len(first) == 10 and all(0.2 <= r.values["flops_ratio"] <= 0.5 for r in first)
    assert len({key_of(r.policy) for r in first}) == 10
    strict = FakeContext(deep, budget=200)  # the code's rule: re-draw those below the floor
    GeneCAIStrategy(population=10, generations=1, metric_floor=94.0, init_metric_filter=True, init_rounds=2).run(strict)
    drawn = records_of(strict, phase="evolution", generation=0)
    drawn.sort(key=lambda r: r.number)
    passing = [r.values["metric"] >= 94.0 for r in drawn]
    assert 10 < len(drawn) <= 30 and sum(passing) > sum(passing[:10])  # the re-draws found more


def test_genecai_sequential_phases_decompose_then_prune(deep: SearchSpace) -> None:
    ctx = FakeContext(deep, budget=300)
    GeneCAIStrategy(population=12, phases="sequential").run(ctx)
    decomposition = records_of(ctx, phase="evolution", stage="decomposition")
    pruning = records_of(ctx, phase="evolution", stage="pruning")
    assert len(decomposition) > 50 and len(pruning) > 50 and len(ctx.real) == 300
    assert all(g.prune == 0 for r in decomposition for g in r.policy.layers.values())
    ranks = {tuple(g.rank for g in r.policy.layers.values()) for r in decomposition}
    assert all(tuple(g.rank for g in r.policy.layers.values()) in ranks for r in pruning)
    assert all(any(g.prune > 0 for g in r.policy.layers.values()) for r in pruning)


def test_archive_keeps_the_non_dominated_records() -> None:
    objectives = (Objective.parse("accuracy"), Objective.parse("flops"))
    points = [(90, 100), (95, 200), (89, 150), (95, 250), (80, 50)]
    records = [Record(i, Policy(), "complete", {"metric": m, "flops": f}) for i, (m, f) in enumerate(points)]
    records.append(Record(9, Policy(), "failed"))
    assert [r.number for r in archive(records, objectives)] == [0, 1, 4]


# ---------------------------------------------------------------- both: determinism, resume, budget
# (factory, budget of the killed run): every sweep (19 evaluations at most here) fits in the
# sweep's share of both budgets, so the killed run and the full run plan the same sweep
STRATEGIES = {
    "greedy": (lambda: GreedyStrategy(0.4, fields=("prune", "rank"), sweep_fraction=1.0), 22),
    "greedy-marginal": (
        lambda: GreedyStrategy(0.4, fields=("prune",), method="marginal", extra_targets=(0.6, 0.2), sweep_fraction=1.0),
        14,
    ),
    "genecai": (lambda: GeneCAIStrategy(population=6, sweep_fraction=0.7), 30),
    "genecai-sequential": (lambda: GeneCAIStrategy(population=6, generations=3, phases="sequential", sweep_fraction=0.7), 30),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_same_seed_same_sequence(space: SearchSpace, name: str) -> None:
    make, _ = STRATEGIES[name]
    first, second = FakeContext(space, budget=60, seed=3), FakeContext(space, budget=60, seed=3)
    make().run(first)
    make().run(second)
    assert first.requested == second.requested and len(first.real) > 12
    other = FakeContext(space, budget=60, seed=4)
    make().run(other)
    assert (other.requested != first.requested) == name.startswith("genecai")  # greedy draws no random numbers


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resume_replays_from_the_cache_and_continues_identically(space: SearchSpace, name: str) -> None:
    make, budget = STRATEGIES[name]
    killed = FakeContext(space, budget=budget, seed=5)
    make().run(killed)
    assert len(killed.real) == budget
    resumed = FakeContext(space, budget=2 * budget, seed=5, cache=killed.cache)
    make().run(resumed)
    straight = FakeContext(space, budget=2 * budget, seed=5)
    make().run(straight)
    assert resumed.requested == straight.requested
    assert resumed.real and not set(resumed.real) & set(killed.real)  # nothing finished was evaluated again
    assert killed.real + resumed.real == straight.real


@pytest.mark.parametrize("budget", [17, 22, 41])
def test_budget_is_respected_exactly(space: SearchSpace, budget: int) -> None:
    for strategy in (GeneCAIStrategy(population=6), GeneCAIStrategy(population=6, phases="sequential")):
        ctx = FakeContext(space, budget=budget)
        strategy.run(ctx)
        assert len(ctx.real) == budget  # evolution runs until the budget is spent, not one more
    ctx = FakeContext(space, budget=budget)
    GreedyStrategy(0.4, fields=("prune", "rank"), sweep_fraction=1.0).run(ctx)
    # greedy is done after its sweep (19, or 14 when coarsened to 17) and its 6 targets
    assert len(ctx.real) == min(budget, 25)
    assert any("not swept" in m or "at most 17" in m for m in ctx.logs) == (budget == 17)


def test_genecai_stops_when_no_new_genotype_is_left(space: SearchSpace) -> None:
    ctx = FakeContext(space, budget=500)
    GeneCAIStrategy(population=6).run(ctx)  # a few hundred valid genotypes at most
    assert 40 < len(ctx.real) < 500 and "no new genotype in 3 generations" in ctx.logs[-1]


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="phases"):
        GeneCAIStrategy(phases="both")
    with pytest.raises(ValueError, match="elite"):
        GeneCAIStrategy(population=4, elite=4)
    with pytest.raises(ValueError, match="method"):
        GreedyStrategy(method="bisect")
    with pytest.raises(ValueError, match="fields"):
        GreedyStrategy(fields=("width",))
