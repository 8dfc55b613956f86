"""Layer-targeted low rank (rules on measured gains) and sequential freezing of factors."""

from __future__ import annotations

import pytest
import torch
from test_lut import Counter, Small

from autocompress import Policy, SearchSpace, apply_policy
from autocompress.finetune import train
from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.targeted_lowrank import (
    LayerGain,
    RankOption,
    lowrank_gains,
    targeted_policy,
)
from autocompress.hardware.targets import Target
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
