"""``targeted-lowrank``: factorize only the layers the run's target runs faster (arXiv 2309.12412).

Decomposing every layer can make a network *slower* (a factorized layer is 2-3 smaller calls,
each with its own memory traffic and per-call cost). From each decomposable layer's timings
on the target — the original and its factorizations at rank ratios ``ratios``
(:class:`~autocompress.hardware.targeted_lowrank.LayerGain`) — :func:`targeted_policy` builds
the policy of one of three rules, to compare at equal accuracy loss:

- ``"all"``: every decomposable layer at ``ratio`` (what a FLOPs-driven tool does when
  told "rank 1/2");
- ``"flops"``: the layers whose FLOPs the factorization at ``ratio`` reduces;
- ``"measured"``: the layers whose factorization is measured faster than the original
  by at least ``min_gain`` (relative), each at its fastest rank among ratios >= ``ratio``
  (never a lower rank than "all" uses, so its accuracy loss is no larger).

The strategy takes the timings from the lookup table of the run's target: the search's latency
model's (``ctx.latency_model``, which ``search(..., latency={"estimate": True, ...})`` builds;
:func:`~autocompress.hardware.targeted_lowrank.table_gains`) when it has one, else a table it opens
itself for the target of the search's latency settings (``ctx.latency_settings``; default ``ort-cpu``,
1 thread, batch 32), timing the context's model on its example input
(:func:`~autocompress.hardware.targeted_lowrank.lowrank_gains`: the same numbers). It evaluates the
policy of each of its ``rules`` ("measured" by default) like any candidate, tagged
``phase="targeted"`` and ``rule``; a rule that factorizes no layer proposes nothing. The timings
are kept in the study, so a resumed run proposes the same policies. The whole-model check
:func:`~autocompress.hardware.targeted_lowrank.verify_faster` measures every candidate whole and
stays a step of its own (benchmarks/hardware.py runs it).
"""

from __future__ import annotations

from collections.abc import Sequence

from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.targeted_lowrank import LayerGain, lowrank_gains, table_gains
from autocompress.hardware.targets import target_from_settings
from autocompress.policy import LayerGenes, Policy
from autocompress.search.strategies.base import SearchContext, Strategy
from autocompress.space import SearchSpace

RULES = ("all", "flops", "measured")


def targeted_policy(
    space: SearchSpace, gains: Sequence[LayerGain], rule: str, ratio: float = 0.5, *, min_gain: float = 0.05
) -> Policy:
    """The low-rank policy of ``rule`` (``"all"``, ``"flops"`` or ``"measured"``; see the module docstring)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    layers: dict[str, LayerGenes] = {}
    for gain in gains:
        chosen: float | None = None
        if rule == "all":
            chosen = ratio
        elif rule == "flops":
            chosen = ratio if gain.option(ratio).macs < gain.original_macs else None
        else:
            best = gain.fastest(min_ratio=ratio)
            chosen = best.ratio if best.ms < (1 - min_gain) * gain.original_ms else None
        if chosen is not None:
            layers[gain.name] = LayerGenes(rank=chosen)
    return space.validate(Policy(layers=layers, inputs=space.inputs))


class TargetedLowRankStrategy(Strategy):
    """Evaluate the policy of each of ``rules`` on the gains timed at ``ratios`` (``ratio``: the lowest rank used)."""

    name = "targeted-lowrank"

    def __init__(
        self,
        rules: Sequence[str] = ("measured",),
        ratio: float = 0.5,
        ratios: Sequence[float] = (0.75, 0.5, 0.25),
        min_gain: float = 0.05,
    ) -> None:
        unknown = [r for r in rules if r not in RULES]
        if not rules or unknown:
            raise ValueError(f"targeted-lowrank: rules must be a non-empty list of {', '.join(RULES)}; got {list(rules)}")
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"targeted-lowrank: ratios must be in (0, 1), got {list(ratios)}")
        if not any(abs(ratio - r) < 1e-9 for r in ratios):
            raise ValueError(f"targeted-lowrank: ratio {ratio} must be one of the ratios timed, {list(ratios)}")
        if not 0 <= min_gain < 1:
            raise ValueError(f"targeted-lowrank: min_gain must be in [0, 1), got {min_gain}")
        self.rules = tuple(dict.fromkeys(rules))
        self.ratio = float(ratio)
        self.ratios = tuple(float(r) for r in ratios)
        self.min_gain = float(min_gain)

    def gains(self, ctx: SearchContext) -> list[LayerGain]:
        """Each decomposable layer's timings from the run's table (the latency model's, else one opened for the
        search's latency settings); kept in the study, so a resumed run reuses them."""
        key = "targeted-lowrank gains at " + ",".join(f"{r:g}" for r in sorted(set(self.ratios), reverse=True))
        kept = ctx.kept(key)
        if kept is not None:
            return [LayerGain.from_dict(g) for g in kept]
        latency = ctx.latency_model
        table = latency.table if latency is not None else LatencyTable.open(
            target_from_settings(ctx.latency_settings or {}, repeats=50))  # the target latency={"estimate": True} times
        ctx.status(f"timing the factorizations on {table.target.name}")
        if latency is not None:
            gains = table_gains(latency, self.ratios)
        else:
            gains = lowrank_gains(ctx.model, ctx.example_input, ctx.space, table, self.ratios)
        ctx.status("")
        ctx.keep(key, [g.to_dict() for g in gains])
        return gains

    def run(self, ctx: SearchContext) -> None:
        gains = self.gains(ctx)
        for rule in self.rules:
            policy = targeted_policy(ctx.space, gains, rule, self.ratio, min_gain=self.min_gain)
            if not policy.layers:
                ctx.log(f"targeted-lowrank: the {rule!r} rule factorizes no layer (rank >= {self.ratio:g})")
                continue
            ctx.evaluate(policy, phase="targeted", rule=rule)
