"""Layer-targeted low rank (rules on measured gains, the targeted-lowrank strategy) and sequential freezing of factors."""

from __future__ import annotations

import json

import pytest
import torch
from fake_search import FakeContext
from test_lut import Counter, Small

from autocompress import Policy, SearchSpace, apply_policy
from autocompress.finetune import train
from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.policy_latency import PolicyLatency
from autocompress.hardware.targeted_lowrank import LayerGain, RankOption, lowrank_gains, table_gains
from autocompress.hardware.targets import Target
from autocompress.search import load_config, search
from autocompress.search.runner import KEPT_PREFIX
from autocompress.search.strategies import make_strategy
from autocompress.search.strategies.targeted_lowrank import targeted_policy
from autocompress.search.study import policy_key
from autocompress.task import Task
from autocompress.transforms.freezing import alternate_factors, factor_phases, unfreeze_factors
from autocompress.zoo import load_zoo


@pytest.fixture(scope="module")
def small_space():
    torch.manual_seed(0)
    model, x = Small(), torch.randn(2, 1, 20)
    return model, x, SearchSpace.from_model(model, x, methods=["lowrank"], rank_multiple=8)


def gain(name: str, original_ms: float, macs: int, options: list[tuple[float, float, int]]) -> LayerGain:
    return LayerGain(name, original_ms, macs, tuple(RankOption(r, (), ms, m) for r, ms, m in options))


def test_rules_pick_layers_by_their_measured_gain(small_space):
    _, _, space = small_space
    decomposable = [n for n, i in space.layers.items() if i.decomposable]
    assert len(decomposable) >= 2
    slow, fast = decomposable[0], decomposable[1]
    gains = [
        gain(slow, 1.0, 100, [(0.75, 1.3, 90), (0.5, 1.1, 60), (0.25, 0.99, 30)]),  # fewer MACs, never 5 % faster
        gain(fast, 1.0, 100, [(0.75, 0.6, 120), (0.5, 0.7, 60), (0.25, 0.5, 30)]),  # faster, MACs up at 0.75
    ]
    ranks = {rule: {k: v.rank for k, v in targeted_policy(space, gains, rule, 0.5).layers.items()}
             for rule in ("all", "flops", "measured")}
    assert ranks["all"] == {slow: 0.5, fast: 0.5}
    assert ranks["flops"] == {slow: 0.5, fast: 0.5}
    assert ranks["measured"] == {fast: 0.75}  # its fastest rank among ratios >= 0.5; the slow layer left alone
    at_75 = {k: v.rank for k, v in targeted_policy(space, gains, "flops", 0.75).layers.items()}
    assert at_75 == {slow: 0.75}  # FLOPs pick the layer that is slower, and skip the faster one
    with pytest.raises(ValueError, match="unknown rule 'speed'; allowed: all, flops, measured"):
        targeted_policy(space, gains, "speed")


def test_lowrank_gains_time_every_factorization_once(small_space):
    model, x, space = small_space
    timer = Counter()
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=timer)
    gains = lowrank_gains(model, x, space, table, ratios=(0.75, 0.5))
    assert [g.name for g in gains] == [n for n, i in space.layers.items() if i.decomposable]
    for g in gains:
        assert [o.ratio for o in g.options] == [0.75, 0.5]
        assert all(r % 8 == 0 or r < 8 for o in g.options for r in o.ranks)
        assert g.options[1].macs < g.options[0].macs
    calls = timer.calls
    lowrank_gains(model, x, space, table, ratios=(0.75, 0.5))
    assert timer.calls == calls  # every configuration came from the table
    with pytest.raises(ValueError, match=r"ratios must be in \(0, 1\)"):
        lowrank_gains(model, x, space, table, ratios=(1.5,))


def test_sequential_freezing_trains_the_factors_in_turn():
    entry = load_zoo("wine-mlp", pretrained=False, seed=0)
    space = SearchSpace.from_model(entry.model, entry.example_input, methods=["lowrank"])
    model = apply_policy(entry.model, Policy.uniform(space, rank=0.5), space=space)
    outer, inner = factor_phases(model)
    assert outer and inner
    on_step = alternate_factors(model, period=2)
    on_step(0)
    assert not any(p.requires_grad for p in outer) and all(p.requires_grad for p in inner)
    on_step(2)
    assert all(p.requires_grad for p in outer) and not any(p.requires_grad for p in inner)
    unfreeze_factors(model)
    before = [p.detach().clone() for p in outer + inner]
    seen = []

    def record(step: int) -> None:
        seen.append(step)
        on_step(step)

    train(model, entry.task, steps=4, on_step=record)
    unfreeze_factors(model)
    assert seen == [0, 1, 2, 3]
    after = outer + inner
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # every factor trained in its turn
    with pytest.raises(ValueError, match="no factorized"):
        alternate_factors(entry.model)


def test_verify_faster_only_ever_removes_factorized_layers(small_space):
    from autocompress.hardware.targeted_lowrank import verify_faster

    model, x, space = small_space
    policy = Policy.uniform(space, rank=0.5)
    gains = lowrank_gains(model, x, space, LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Counter()),
                          ratios=(0.5,))
    target = Target("ort-cpu", batch=4, warmup=1, repeats=3)
    final, checks = verify_faster(model, x, space, policy, gains, target, rounds=1)
    assert set(final.layers) <= set(policy.layers) and all(v.rank == 0.5 for v in final.layers.values())
    assert 1 <= len(checks) <= len(policy.layers) and checks[0]["layers"] == len(policy.layers)
    last = checks[-1]
    assert (last["original_ms"] >= 1.03 * last["factorized_ms"]) or len(checks) == len(policy.layers)
    with pytest.raises(ValueError, match="not ort-cpu"):
        verify_faster(model, x, space, policy, gains, Target("torch-cpu"))


def stub_table() -> LatencyTable:
    """Deterministic stub timings (latency ~ parameters + a per-call cost): a factorization with fewer
    parameters is faster, one with more is slower."""
    return LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Counter())


def test_table_gains_are_lowrank_gains_without_the_model(small_space):
    model, x, space = small_space
    table = stub_table()
    expected = lowrank_gains(model, x, space, table, ratios=(0.75, 0.5, 0.25))
    gains = table_gains(PolicyLatency(space, model, x, table, calibration=0), (0.25, 0.75, 0.5))
    assert gains == expected  # the same timings, ranks and MACs, derived from the table alone
    assert [LayerGain.from_dict(json.loads(json.dumps(g.to_dict()))) for g in gains] == gains
    with pytest.raises(ValueError, match=r"ratios must be in \(0, 1\)"):
        table_gains(PolicyLatency(space, model, x, table, calibration=0), (0.5, 1.0))


def test_targeted_lowrank_strategy_evaluates_the_measured_policy(small_space, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    model, x, _ = small_space
    space = SearchSpace.from_model(model, x, methods=["lowrank"], rank_multiple=8)
    table = stub_table()
    latency = PolicyLatency(space, model, x, table, calibration=0)  # the run's target: its table
    gen = torch.Generator().manual_seed(0)
    task = Task("toy", (torch.randn(64, 1, 20, generator=gen), torch.randint(0, 10, (64,), generator=gen)),
                (torch.randn(32, 1, 20, generator=gen), torch.randint(0, 10, (32,), generator=gen)), batch_size=16)
    settings = {"strategy": "targeted-lowrank", "strategy_params": {"rules": ["measured", "all", "flops"]},
                "budget": 3, "storage": tmp_path / "t.db", "finetune_epochs": 0.0, "progress": False,
                "evaluator": {"finetune_steps": 2, "freeze": "sequential", "device": "cpu"}, "latency_model": latency}
    study = search(model, task, space, **settings)

    # the truth: each decomposable layer timed from the table through the model (lowrank_gains)
    truth = {g.name: g for g in lowrank_gains(model, x, space, table, ratios=(0.75, 0.5, 0.25))}
    fastest = {name: g.fastest(min_ratio=0.5) for name, g in truth.items()}
    faster = {name: best.ratio for name, best in fastest.items() if best.ms < 0.95 * truth[name].original_ms}
    assert faster and set(faster) != set(truth)  # this table has a layer factorization speeds up and one it slows
    slower = next(name for name in truth if name not in faster)
    assert all(o.ms >= 0.95 * truth[slower].original_ms for o in truth[slower].options if o.ratio >= 0.5)

    records = study.completed()
    by_rule = {r.tags["rule"]: r for r in records}
    assert all(r.tags["phase"] == "targeted" and r.tags["strategy"] == "targeted-lowrank" for r in records)
    measured = by_rule["measured"].policy
    assert {k: v.rank for k, v in measured.layers.items()} == faster  # only the layers the table measured faster
    for name, genes in measured.layers.items():
        option = truth[name].option(genes.rank)
        assert option.ms == min(o.ms for o in truth[name].options if o.ratio >= 0.5) < 0.95 * truth[name].original_ms
    assert {k: v.rank for k, v in by_rule["all"].policy.layers.items()} == dict.fromkeys(truth, 0.5)
    expected = {policy_key(targeted_policy(space, list(truth.values()), rule, 0.5)) for rule in ("measured", "all", "flops")}
    assert {policy_key(r.policy) for r in records} == expected  # every rule's policy evaluated, each once
    assert all(r.values["metric_before_finetune"] <= 100 and "metric" in r.values for r in records)
    kept = study.meta[KEPT_PREFIX + "targeted-lowrank gains at 0.75,0.5,0.25"]
    assert [LayerGain.from_dict(g) for g in kept] == list(truth.values())  # the timings it kept are the table's

    again = search(model, task, space, **settings)  # resumed: the kept timings, the stored results
    assert len(again.completed()) == len(records)

    # no latency model, no latency settings: the run gives the strategy the model and an example input, and
    # it times them on a table it opens for ort-cpu (the stub timings again)
    monkeypatch.setattr("autocompress.hardware.lut.time_layer", Counter())
    own = search(model, task, space, **{**settings, "latency_model": None, "storage": tmp_path / "own.db"})
    assert [LayerGain.from_dict(g) for g in own.meta[KEPT_PREFIX + "targeted-lowrank gains at 0.75,0.5,0.25"]] == list(truth.values())
    assert {policy_key(r.policy) for r in own.completed()} == expected


def test_targeted_lowrank_opens_the_targets_table_without_a_latency_model(small_space, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("autocompress.hardware.lut.time_layer", Counter())  # the stub timings of stub_table()
    model, x, space = small_space
    ctx = FakeContext(space, budget=3, model=model, example_input=x)  # no latency settings, no latency model
    make_strategy("targeted-lowrank", rules=["measured", "all"]).run(ctx)
    truth = lowrank_gains(model, x, space, stub_table(), ratios=(0.75, 0.5, 0.25))
    kept = ctx.store["targeted-lowrank gains at 0.75,0.5,0.25"]
    assert [LayerGain.from_dict(g) for g in kept] == truth  # timed on a table it opened for ort-cpu, the default
    assert [p.name for p in (tmp_path / "cache" / "latency").glob("*.json")][0].startswith("ort-cpu-")
    assert ctx.statuses[0] == "timing the factorizations on ort-cpu:threads=1,batch=32"
    assert [r.policy for r in ctx.cache.values()] == [targeted_policy(space, truth, rule, 0.5) for rule in ("measured", "all")]
    with_settings = FakeContext(space, budget=3, model=model, example_input=x)
    with_settings.latency_settings = {"runtime": "torch-cpu", "threads": 2, "batch": 8, "estimate": False}
    make_strategy("targeted-lowrank").run(with_settings)  # the search's target, though it measures latency whole
    assert with_settings.statuses[0] == "timing the factorizations on torch-cpu:threads=2,batch=8"
    assert [LayerGain.from_dict(g) for g in with_settings.store["targeted-lowrank gains at 0.75,0.5,0.25"]] == truth


def test_targeted_lowrank_checks_its_parameters():
    with pytest.raises(ValueError, match="rules must be a non-empty list of all, flops, measured"):
        make_strategy("targeted-lowrank", rules=["speed"])
    with pytest.raises(ValueError, match="ratio 0.3 must be one of the ratios timed"):
        make_strategy("targeted-lowrank", ratio=0.3)
    assert load_config({"zoo": "wine-mlp", "strategy": "targeted-lowrank"}).strategy == "targeted-lowrank"
