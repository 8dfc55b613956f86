"""Layer-targeted low rank, the measurements: each layer's factorizations timed, a choice verified whole.

"Speeding up ResNet architecture with layers targeted low rank decomposition" (arXiv
2309.12412) shows that decomposing every layer can make a network *slower*: a factorized
layer is 2-3 smaller calls, each with its own memory traffic and per-call cost, and small
or thin layers gain nothing. So, per decomposable layer, on the target:

1. :func:`lowrank_gains` times the original layer and its factorizations at candidate rank
   ratios (ranks rounded to the space's ``rank_multiple``, e.g. 8, which vectorized kernels
   prefer) from the per-layer lookup table (:class:`~autocompress.hardware.lut.LatencyTable`);
   :func:`table_gains` gives the same from a latency model of the space
   (:class:`~autocompress.hardware.policy_latency.PolicyLatency`), without the model;
2. the rules ``"all"`` / ``"flops"`` / ``"measured"`` of the ``targeted-lowrank`` search strategy
   (:func:`autocompress.search.strategies.targeted_lowrank.targeted_policy`) choose the layers
   and ranks from these gains;
3. :func:`verify_faster` measures the chosen model whole against the original, side by
   side, and leaves layers whole (smallest table gain first) until it is faster: the
   "measured" rule's answer is never slower than the original by measurement.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autocompress.analytic import layer_costs
from autocompress.apply import apply_policy
from autocompress.calls import Example, bind, split_example
from autocompress.cost import count_cost
from autocompress.export import batched, compare_latency, export_onnx
from autocompress.hardware.lut import LatencyTable, layer_configs
from autocompress.hardware.policy_latency import PolicyLatency
from autocompress.hardware.targets import Target
from autocompress.policy import LayerGenes, Policy
from autocompress.space import SearchSpace
from autocompress.transforms.lowrank import LowRank, factorize


@dataclass(frozen=True)
class RankOption:
    ratio: float
    ranks: tuple[int, ...]
    ms: float  # table latency of the factorized layer (sum of its factors)
    macs: int  # per-sample MACs of the factorized layer

    def speedup(self, original_ms: float) -> float:
        return original_ms / self.ms if self.ms > 0 else float("inf")


@dataclass(frozen=True)
class LayerGain:
    """One decomposable layer on a target: original latency/MACs and each factorization's."""

    name: str
    original_ms: float
    original_macs: int
    options: tuple[RankOption, ...]

    def option(self, ratio: float) -> RankOption:
        return next(o for o in self.options if abs(o.ratio - ratio) < 1e-9)

    def fastest(self, min_ratio: float = 0.0) -> RankOption:
        return min((o for o in self.options if o.ratio >= min_ratio - 1e-9), key=lambda o: o.ms)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what :meth:`from_dict` reads back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerGain:
        options = tuple(RankOption(o["ratio"], tuple(o["ranks"]), o["ms"], o["macs"]) for o in data["options"])
        return cls(data["name"], data["original_ms"], data["original_macs"], options)


def _macs(module: nn.Module, x: Tensor) -> int:
    return int(count_cost(module, x).macs)


def lowrank_gains(
    model: nn.Module,
    example_input: Example,
    space: SearchSpace,
    table: LatencyTable,
    ratios: Sequence[float] = (0.75, 0.5, 0.25),
) -> list[LayerGain]:
    """Measured latency (from ``table``) of each decomposable layer, original and factorized at ``ratios``.

    Ranks are rounded to ``space.rank_multiple`` (build the space with e.g.
    ``rank_multiple=8``), exactly as applying the policy will round them. ``example_input``: a tensor,
    positional tensors or keyword tensors (the model is then called through
    :func:`~autocompress.calls.bind`).
    """
    multiple = space.rank_multiple
    _check_ratios(ratios)
    tensors, names = split_example(example_input)
    calls = {name: config for name, config in layer_configs(bind(model, names, space.output), tensors)}
    modules = dict(model.named_modules())
    out = []
    for name, info in space.layers.items():
        if not info.decomposable or name not in calls:
            continue
        config = calls[name]
        x = torch.randn(1, *config.input_shape)
        layer = modules[name]
        options = []
        for ratio in _descending(ratios):
            factored = factorize(layer, ratio, multiple, name=name)
            ranks = factored.ranks if isinstance(factored, LowRank) else ()
            ms = sum(table.layer_ms(c) for _, c in layer_configs(factored, x))
            options.append(RankOption(ratio, tuple(ranks), ms, _macs(factored, x)))
        out.append(LayerGain(name, table.layer_ms(config), _macs(layer, x), tuple(options)))
    return out


def table_gains(latency: PolicyLatency, ratios: Sequence[float] = (0.75, 0.5, 0.25)) -> list[LayerGain]:
    """:func:`lowrank_gains` from a space's latency model, without the model (e.g. a search's ``ctx.latency_model``).

    ``latency`` knows each layer's call as the original runs it; the factors' configurations
    are derived as :class:`~autocompress.hardware.policy_latency.PolicyLatency` derives them
    for a policy, timed from its table, and their MACs counted analytically: the same numbers
    as :func:`lowrank_gains` on the model the latency model was built from.
    """
    _check_ratios(ratios)
    space, table = latency.space, latency.table
    rows = {row.name: row for row in space.pruned_rows(Policy())}
    out = []
    for name, info in space.layers.items():
        if not info.decomposable or name not in latency.originals:
            continue
        row = rows[name]
        options = []
        for ratio in _descending(ratios):
            genes = LayerGenes(rank=ratio)
            configs = latency.call_configs(row, genes)
            ranks = tuple(c.out_channels for c in configs[:-1])  # svd: (rank,); tucker2: (rank_in, rank_out)
            macs = sum(c.macs for c in layer_costs(row, genes, space.rank_multiple))
            options.append(RankOption(ratio, ranks, sum(table.layer_ms(c) for c in configs), macs))
        original_macs = sum(c.macs for c in layer_costs(row, None, space.rank_multiple))
        out.append(LayerGain(name, table.layer_ms(latency.originals[name]), original_macs, tuple(options)))
    return out


def _check_ratios(ratios: Sequence[float]) -> None:
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"ratios must be in (0, 1), got {list(ratios)}")


def _descending(ratios: Sequence[float]) -> list[float]:
    return sorted(set(float(r) for r in ratios), reverse=True)


def verify_faster(
    model: nn.Module,
    example_input: Tensor | tuple,
    space: SearchSpace,
    policy: Policy,
    gains: Sequence[LayerGain],
    target: Target,
    *,
    rounds: int = 3,
    min_speedup: float = 1.03,
) -> tuple[Policy, list[dict[str, float]]]:
    """``policy`` trimmed until the whole model is measured at least ``min_speedup`` × faster than ``model``.

    The table's per-layer gains do not always add up in a graph (fusions, memory layout), so
    the factorized model and the original are measured side by side (ONNX Runtime, ``rounds``
    round-robin rounds); while the factorized one is not ``min_speedup`` times faster (a margin
    over the measurement noise, ~1-2 % here), the factorized layer with the smallest table gain
    is left whole. Returns the final policy (possibly empty: nothing
    factorized) and each check's ``{"layers", "original_ms", "factorized_ms"}``.
    """
    if target.runtime != "ort-cpu":
        raise ValueError(f"verify_faster measures with ONNX Runtime; target {target.name} is not ort-cpu")
    saved = {g.name: g.original_ms - g.option(policy.layers[g.name].rank).ms for g in gains if g.name in policy.layers}
    inputs = batched(example_input, target.batch)
    history: list[dict[str, float]] = []
    current = policy
    with tempfile.TemporaryDirectory() as folder:
        original_path = export_onnx(model, Path(folder) / "original.onnx", inputs, check=False)
        while current.layers:
            candidate = apply_policy(model, current, space=space)
            path = export_onnx(candidate, Path(folder) / f"c{len(history)}.onnx", inputs, check=False)
            timed = compare_latency({"original": original_path, "factorized": path}, inputs, threads=target.threads,
                                    warmup=target.warmup, repeats=target.repeats, rounds=rounds)
            history.append({"layers": len(current.layers), "original_ms": timed["original"].median_ms,
                            "factorized_ms": timed["factorized"].median_ms})
            if timed["original"].median_ms >= min_speedup * timed["factorized"].median_ms:
                break
            weakest = min(current.layers, key=lambda name: saved.get(name, 0.0))
            current = space.validate(Policy(layers={k: v for k, v in current.layers.items() if k != weakest},
                                            inputs=space.inputs))
    return current, history
