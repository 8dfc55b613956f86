"""apq: the evolution (budget, crossover children kept, determinism) and the strategy on a digits supernet."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_search import FakeContext, records_of
from test_lut import Int8Half

from autocompress.apply import apply_policy
from autocompress.cost import count_cost
from autocompress.elastic import (
    ElasticCNN2d,
    ElasticSpace,
    QuantSubnet,
    subnet_metric,
    train_supernet,
)
from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.targets import Target
from autocompress.policy import Policy
from autocompress.search.evolution import evolve
from autocompress.search.objectives import parse_objectives
from autocompress.search.runner import search
from autocompress.search.strategies.apq import APQStrategy
from autocompress.search.study import policy_key
from autocompress.threads import single_threaded
from autocompress.zoo import load_task

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster
TARGETS = ["bitops_ratio<=0.02", "bitops_ratio<=0.005"]


@pytest.fixture(scope="module")
def elastic() -> ElasticSpace:
    task = load_task("digits", seed=0)
    torch.manual_seed(0)
    net = ElasticCNN2d(channels=(8, 16, 32))
    with single_threaded():
        train_supernet(net, task, epochs=1, seed=0, sandwich=1)
        _, reference = subnet_metric(net, net.largest(), task, bn_batches=4)
    return ElasticSpace(net, task, reference=reference, bn_batches=4)


class ApqContext(FakeContext):
    """The fake search context over a supernet's candidates: exact costs, a synthetic metric, the study's keys.

    The search's model (the reference) is the largest sub-network at full precision.
    """

    def __init__(self, elastic: ElasticSpace, budget: int, seed: int = 0, cache: dict | None = None) -> None:
        reference = elastic.policy(QuantSubnet.full_precision(elastic.supernet.largest()))
        space = SimpleNamespace(cost=lambda p: elastic.cost(reference if p.arch is None else p))
        super().__init__(space, budget, seed, cache)
        self.elastic = elastic
        self.objectives = parse_objectives(["accuracy", "bitops"])

    def key(self, policy: Policy) -> str:
        return policy_key(policy)

    def accuracy(self, policy: Policy) -> float:
        config = self.elastic.config(policy.arch)
        arch = sum(2 * s.depth + 8 * s.width + s.kernel for s in config.stages)
        bits = 0.0  # per stage, the mean over its layers (per-block bits differ within a stage)
        for names in self.elastic.supernet.stage_layers(config):
            genes = [policy.genes(n) for n in names]
            bits += float(np.mean([min(g.weight_bits, 8) + 0.5 * min(g.act_bits, 8) for g in genes]))
        return 50.0 + arch + bits


def built_cost(elastic: ElasticSpace, policy: Policy):  # noqa: ANN201
    """The cost counted on the built model: extract, apply the policy, count."""
    model = elastic.supernet.extract(elastic.config(policy.arch))
    return count_cost(apply_policy(model, policy, elastic.example), elastic.example)


def test_evolution_keeps_crossover_children_within_the_budget_deterministically():
    choices = [tuple(range(6))] * 8
    weights = np.arange(1.0, 9.0)

    def feasible(vector: np.ndarray) -> bool:
        return float(vector @ weights) <= 60.0

    def fitness(rows: np.ndarray) -> np.ndarray:
        return rows.sum(1) - 0.1 * (rows**2).sum(1)

    def run(seed: int):  # noqa: ANN202
        return evolve(choices, fitness, feasible, np.random.default_rng(seed), population=20, iterations=12)

    first, again, other = run(0), run(0), run(1)
    assert len(first.population) == 20 and all(feasible(i.vector) for i in first.population)
    assert first.history[0] == {"random": 20}
    # parents 5, mutants 10, crossovers 5 per generation: every feasible crossover child joins the population
    assert first.history[1:] == [{"mutation": 10, "crossover": 5, "dropped": 0}] * 12
    assert any(i.origin == "crossover" and i.generation > 0 for i in first.population)
    assert [i.fitness for i in first.population] == sorted((i.fitness for i in first.population), reverse=True)
    assert first.population[0].fitness > max(fitness(np.array([i.vector for i in first.population
                                                                 if i.origin == "random"] or [np.zeros(8)])))
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(first.population, again.population, strict=True))
    assert not all(np.array_equal(a.vector, b.vector) for a, b in zip(first.population, other.population, strict=True))
    best = first.best(3)
    assert len({tuple(i.vector) for i in best}) == 3
    parity = first.best(3, key=lambda v: int(v.sum()) % 2)  # distinct by a key: at most one per parity
    assert len(parity) == 2 and parity[0] is first.population[0]
    assert evolve(choices, fitness, lambda v: False, np.random.default_rng(0), population=4).population == []


def test_apq_keeps_every_candidate_within_its_budget_by_exact_count(elastic):
    strategy = APQStrategy(targets=TARGETS, fp_samples=12, q_samples=6, population=20, iterations=8, final=2, epochs=100)
    ctx = ApqContext(elastic, budget=12)
    strategy.run(ctx)
    labels, finals = records_of(ctx, phase="label"), records_of(ctx, phase="final")
    assert len(labels) == 6 and len(finals) == 4 and len(ctx.real) == 10
    base = ctx.original.values["bitops"]
    bounds = {"bitops_ratio<=0.02": 0.02 * base, "bitops_ratio<=0.005": 0.005 * base}
    assert [r.tags["target"] for r in finals] == [TARGETS[0]] * 2 + [TARGETS[1]] * 2
    for record in finals:
        assert built_cost(elastic, record.policy).bitops <= bounds[record.tags["target"]]
    for record in labels:  # the quantized labels are drawn within the loosest budget
        assert built_cost(elastic, record.policy).bitops <= bounds[TARGETS[0]]
    assert any("crossover children joined" in m for m in ctx.logs)
    again = ApqContext(elastic, budget=12)
    strategy.run(again)
    assert again.requested == ctx.requested  # deterministic for a seed (a resumed search replays it from the study)


def test_the_staged_pipeline_fixes_the_architecture_before_the_bits(elastic):
    ctx = ApqContext(elastic, budget=5)
    APQStrategy(targets=TARGETS[:1], pipeline="staged", fp_samples=6, q_samples=2, population=12, iterations=4,
                final=2, epochs=50).run(ctx)
    finals = records_of(ctx, phase="final")
    assert len(finals) == 2 and {r.tags["pipeline"] for r in finals} == {"staged"}
    assert len({r.policy.arch for r in finals}) == 1  # one architecture, several bit allocations
    bound = 0.02 * ctx.original.values["bitops"]
    assert all(built_cost(elastic, r.policy).bitops <= bound for r in finals)
    with pytest.raises(ValueError, match="pipeline must be one of"):
        APQStrategy(pipeline="sequential")


def counting_space(elastic: ElasticSpace, interrupt_after: int | None = None) -> tuple[ElasticSpace, list]:
    """A fresh ElasticSpace of the same supernet (nothing cached in memory) whose cheap labels are counted;
    the one after ``interrupt_after`` raises KeyboardInterrupt, as a user's Ctrl-C would."""
    space = ElasticSpace(elastic.supernet, elastic.task, reference=elastic.reference, bn_batches=elastic.bn_batches)
    measured, measure = [], space.fp_metric

    def fp_metric(config):  # noqa: ANN001, ANN202
        if interrupt_after is not None and len(measured) == interrupt_after:
            raise KeyboardInterrupt
        value = measure(config)
        measured.append((config, value))
        return value

    space.fp_metric = fp_metric
    return space, measured


def test_apq_keeps_its_cheap_labels_in_the_study_and_a_resumed_run_measures_only_the_missing(elastic):
    strategy = APQStrategy(targets=TARGETS[:1], fp_samples=25, q_samples=2, population=12, iterations=3, final=1, epochs=50)
    space, measured = counting_space(elastic)
    first = ApqContext(space, budget=3)
    strategy.run(first)
    key = f"apq-fp-labels-{elastic.fingerprint()}"
    assert list(first.store) == [key]
    labels = first.store[key]
    assert len(measured) == len(labels) == len({tuple(c.to_vector()) for c, _ in measured})  # each architecture once
    assert labels == {",".join(f"{v:g}" for v in c.to_vector()): value for c, value in measured}
    assert first.statuses[0] == "apq: full-precision labels 0/25" and first.statuses[-1] == ""

    interrupted, done = counting_space(elastic, interrupt_after=13)  # Ctrl-C during the 14th cheap label
    killed = ApqContext(interrupted, budget=3)
    with pytest.raises(KeyboardInterrupt):
        strategy.run(killed)
    assert len(done) == 13 and len(killed.store[key]) == 10  # the study holds the first 10 (saved every 10)
    assert killed.real == []  # no evaluation was spent

    resumed, again = counting_space(elastic)
    ctx = ApqContext(resumed, budget=3)
    ctx.store = dict(killed.store)
    strategy.run(ctx)
    assert len(again) == len(labels) - 10  # only what the study lacked
    assert ctx.store[key] == labels and ctx.requested == first.requested  # the same predictor: the same candidates
    assert any("10 kept from an earlier run" in m for m in ctx.logs)


def test_cheap_labels_of_another_supernet_or_setting_are_not_reused(elastic):
    same = ElasticSpace(elastic.supernet, elastic.task, reference=elastic.reference, bn_batches=elastic.bn_batches)
    assert same.fingerprint() == elastic.fingerprint()
    other_setting = ElasticSpace(elastic.supernet, elastic.task, reference=elastic.reference, bn_batches=2)
    other = copy.deepcopy(elastic.supernet)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    other_weights = ElasticSpace(other, elastic.task, reference=elastic.reference, bn_batches=elastic.bn_batches)
    assert len({elastic.fingerprint(), other_setting.fingerprint(), other_weights.fingerprint()}) == 3


@pytest.mark.parametrize(("transfer", "kind"), [("residual", "auto"), ("residual", "linear"), ("warm", "mlp"), ("none", "mlp")])
def test_each_predictor_transfer_searches_within_the_budget(elastic, transfer, kind):
    ctx = ApqContext(elastic, budget=6)
    strategy = APQStrategy(targets=TARGETS[:1], transfer=transfer, kind=kind, fp_samples=12, q_samples=4, population=12,
                           iterations=4, final=2, epochs=50)
    strategy.run(ctx)
    finals = records_of(ctx, phase="final")
    assert len(finals) == 2 and len(records_of(ctx, phase="label")) == 4
    assert all(built_cost(elastic, r.policy).bitops <= 0.02 * ctx.original.values["bitops"] for r in finals)


def test_per_block_bits_search_within_the_budget_and_give_blocks_their_own_bits(elastic):
    ctx = ApqContext(elastic, budget=8)
    strategy = APQStrategy(targets=TARGETS[:1], bits_per="block", fp_samples=12, q_samples=4, population=16,
                           iterations=4, final=4, epochs=50)
    strategy.run(ctx)
    blocks = max(elastic.supernet.choices()[0]["depth"])
    assert strategy.blocks(elastic) == blocks == 3 and len(strategy.choices(elastic)) == 3 * (3 + 2 * blocks)
    labels, finals = records_of(ctx, phase="label"), records_of(ctx, phase="final")
    assert len(labels) == 4 and len(finals) == 4
    assert len({policy_key(r.policy) for r in finals}) == 4  # distinct candidates, not genotypes differing in idle slots
    for record in finals:
        assert built_cost(elastic, record.policy).bitops <= 0.02 * ctx.original.values["bitops"]
    per_block = [QuantSubnet.from_policy(r.policy, elastic.supernet, blocks) for r in labels + finals]
    # some stage of some candidate has blocks at different bits: a per-stage candidate could not say it
    assert any(len(set(c.stage_bits(i)[:stage.depth])) > 1 for c in per_block for i, stage in enumerate(c.config.stages))
    with pytest.raises(ValueError, match=r"bits_per must be one of \['stage', 'block'\], got 'layer'"):
        APQStrategy(bits_per="layer")
    net = elastic.supernet
    two_per_block = SimpleNamespace(supernet=SimpleNamespace(  # an elastic model whose blocks hold two layers each
        choices=net.choices, largest=net.largest, stage_layers=lambda c: [n + n for n in net.stage_layers(c)]))
    with pytest.raises(ValueError, match=r"one quantized layer per block .* has \[6, 6, 6\] layers for depths \[3, 3, 3\]"):
        strategy.blocks(two_per_block)
    assert APQStrategy().blocks(two_per_block) == 1  # per stage: any layers


def test_apq_rejects_a_transfer_it_cannot_make():
    with pytest.raises(ValueError, match=r"transfer must be one of \['residual', 'warm', 'none'\], got 'fine-tune'"):
        APQStrategy(transfer="fine-tune")
    with pytest.raises(ValueError, match=r"with transfer='warm', kind must be one of \['mlp', 'ensemble'\], got 'gp'"):
        APQStrategy(transfer="warm", kind="gp")
    with pytest.raises(ValueError, match="kind must be one of"):
        APQStrategy(kind="forest")


def test_apq_latency_budget_from_the_lookup_table(elastic):
    timer = Int8Half()
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=timer)
    reference_ms = elastic.reference_latency_ms(table)  # calibrated on sub-networks with int8 and float stages
    assert reference_ms == pytest.approx(timer(elastic.reference, (elastic.example,), table.target).median_ms)
    largest = elastic.supernet.largest()
    int8 = QuantSubnet(largest, ((8, 8),) * len(largest.stages))
    assert elastic.latency_ms(int8, table) < elastic.latency_ms(largest, table) == pytest.approx(reference_ms)
    ctx = ApqContext(elastic, budget=4)
    ctx.latency_model = SimpleNamespace(table=table)
    strategy = APQStrategy(targets=["latency_ratio<=0.8"], weight_bits=(8, 32), act_bits=(8, 32), fp_samples=6,
                           q_samples=2, population=12, iterations=4, epochs=50)
    strategy.run(ctx)
    finals = records_of(ctx, phase="final")
    assert finals and any(record.policy.genes(n).weight_bits == 8 for record in finals for n in record.policy.layers)
    for record in records_of(ctx):
        built = apply_policy(elastic.supernet.extract(elastic.config(record.policy.arch)), record.policy, elastic.example)
        whole = timer(built, (elastic.example,), table.target).median_ms  # the stub's "measurement" of the model
        assert table.estimate(built, elastic.example, original=elastic.reference).total_ms == pytest.approx(whole)
        assert elastic.latency_ms(elastic.candidate(record.policy), table) == pytest.approx(whole)
        assert whole <= 0.8 * reference_ms + 1e-9
    with pytest.raises(ValueError, match="latency budget needs the lookup tables"):
        APQStrategy(targets=["latency<=1"], fp_samples=2, q_samples=0).run(ApqContext(elastic, budget=2))


def test_apq_results_land_in_the_same_study_as_other_strategies(elastic, tmp_path, monkeypatch):
    common = {"objectives": ["accuracy", "bitops"], "storage": tmp_path / "study.db", "study_name": "joint",
              "finetune_epochs": 0, "evaluator": {"finetune_steps": 2, "bn_batches": 4}, "progress": False}
    search(elastic.reference, elastic.task, strategy="uniform", strategy_params={"fields": ["weight_bits"]}, budget=2,
           **common)
    apq = APQStrategy(targets=["bitops_ratio<=0.02"], fp_samples=6, q_samples=2, population=12, iterations=3, final=1,
                      epochs=50)
    study = search(elastic.reference, elastic.task, strategy=apq, elastic=elastic.supernet, budget=5, **common)
    records = study.records()
    assert [r.tags["strategy"] for r in records] == ["uniform"] * 2 + ["apq"] * 3
    original = study.meta["original"]
    for record in records[2:]:
        assert record.ok and record.policy.arch is not None
        cost = built_cost(elastic, record.policy)
        assert record.values["bitops"] == cost.bitops  # measured on the built sub-network: the exact count
        assert record.values["bitops_ratio"] == pytest.approx(cost.bitops / original["bitops"])
        assert record.values["metric_original"] == original["metric"]  # compared with the search's model
    assert records[-1].values["bitops_ratio"] <= 0.02
    assert {r.number for r in study.pareto_front()} <= {r.number for r in records}
    kept = {k: v for k, v in study.meta.items() if k.startswith("kept:apq-fp-labels-")}
    assert len(kept) == 1 and len(next(iter(kept.values()))) == 6  # the cheap labels, kept in the study
    measured = []
    monkeypatch.setattr(ElasticSpace, "fp_metric", lambda self, config: measured.append(config) or 0.0)
    again = search(elastic.reference, elastic.task, strategy=apq, elastic=elastic.supernet, budget=5, **common)
    assert len(again.records()) == 5  # resumed: replayed from the study, nothing evaluated again
    assert measured == []  # nor a cheap label measured again
