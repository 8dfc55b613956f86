"""A supernet's sub-networks as search candidates: their models, search spaces, exact costs, cheap labels.

:class:`ElasticSpace` is what a search holds to evaluate policies whose ``arch`` names a
sub-network (``search(..., elastic=supernet)``): the runner asks it for the extracted model
and its :class:`~autocompress.space.SearchSpace`, and evaluates the policy on them like any
other; the ``apq`` strategy asks it for exact costs of thousands of candidates and for cheap
full-precision labels. Everything per architecture is computed once and kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from torch import nn

from autocompress.analytic import linear_cost
from autocompress.apply import apply_policy
from autocompress.cost import FP32_BITS, CostReport, count_cost
from autocompress.elastic.encoding import FULL_PRECISION, QuantSubnet
from autocompress.elastic.supernet import ElasticModel, SubnetConfig
from autocompress.elastic.train import subnet_metric
from autocompress.files import weights_digest
from autocompress.finetune import recalibrate_batchnorm
from autocompress.hardware.lut import LatencyTable, LayerConfig, layer_configs, layers_signature
from autocompress.layers import COMPRESSED
from autocompress.policy import InputSpec, Policy
from autocompress.space import SearchSpace
from autocompress.task import Task
from autocompress.transforms.quantize import INT8_BITS, runs_in_int8

Arch = tuple[float, ...]


class ElasticSpace:
    """Sub-networks of ``supernet`` on ``task``, cached per architecture.

    ``reference``: the model the search compresses and compares with (its ``original``),
    usually the largest sub-network; latency estimates use its lookup-table calibration.
    ``bn_batches``, ``split``, ``seed``: how sub-networks get their BatchNorm statistics and
    full-precision metric (as :func:`~autocompress.elastic.train.subnet_metric`).
    """

    def __init__(self, supernet: ElasticModel, task: Task, *, reference: nn.Module | None = None,
                 bn_batches: int = 20, split: str = "val", seed: int = 0) -> None:
        if not isinstance(supernet, ElasticModel):
            raise TypeError(f"{type(supernet).__name__} is not an elastic model: it needs choices(), forward(x, config), "
                            "extract(config), stage_layers(config), largest(), smallest(), random(rng), validate(config) "
                            "(see docs/elastic.md)")
        self.supernet, self.task, self.reference = supernet, task, reference
        self.bn_batches, self.split, self.seed = bn_batches, split, seed
        self.example = task.example_input(1)
        self.inputs = (InputSpec.of(self.example),)
        self._subnets: dict[Arch, tuple[nn.Module, SearchSpace]] = {}
        self._rows: dict[Arch, tuple[CostReport, dict[str, int]]] = {}
        self._fp: dict[Arch, float] = {}
        self._latency: dict[tuple, float] = {}
        self._layer_calls: dict[Arch, list] = {}
        self._reference_layer_calls: list | None = None

    def fingerprint(self) -> str:
        """What a cheap label depends on: the supernet's weights, the task and how labels are measured."""
        settings = json.dumps([weights_digest(self.supernet), self.task.name, self.bn_batches, self.split, self.seed])
        return hashlib.sha256(settings.encode()).hexdigest()[:16]

    def config(self, arch: Sequence[float]) -> SubnetConfig:
        """The (validated) architecture of an ``arch`` vector."""
        return self.supernet.validate(SubnetConfig.from_vector(arch))

    # ---------------------------------------------------------------- policies
    def policy(self, candidate: QuantSubnet) -> Policy:
        return candidate.to_policy(self.supernet, self.inputs)

    def candidate(self, policy: Policy, blocks: int = 1) -> QuantSubnet:
        return QuantSubnet.from_policy(policy, self.supernet, blocks)

    # ---------------------------------------------------------------- models
    def subnet(self, arch: Sequence[float]) -> tuple[nn.Module, SearchSpace]:
        """The extracted sub-network (BatchNorm statistics re-estimated, eval mode) and its SearchSpace
        (quantization only): what a policy with this ``arch`` is applied to and evaluated on."""
        key = _key(arch)
        if key not in self._subnets:
            model = self.supernet.extract(self.config(key))
            recalibrate_batchnorm(model, self.task, batches=self.bn_batches, seed=self.seed)
            space = SearchSpace.from_model(model.eval(), self.example, methods=["quant"])
            self._subnets[key] = (model, space)  # kept: the evaluator caches baselines by model identity
        return self._subnets[key]

    def fp_metric(self, config: SubnetConfig) -> float:
        """The full-precision metric of ``config`` with inherited weights: one cheap label (no fine-tuning)."""
        key = _key(config.to_vector())
        if key not in self._fp:
            self._fp[key] = subnet_metric(self.supernet, config, self.task, self.split, bn_batches=self.bn_batches,
                                          seed=self.seed)[0]
        return self._fp[key]

    # ---------------------------------------------------------------- costs
    def cost(self, candidate: QuantSubnet | Policy) -> CostReport:
        """Exact per-sample cost: equal, row by row, to ``count_cost(apply_policy(extract(config), policy))``.

        The full-precision sub-network is counted once per architecture; a quantized layer's
        row is re-priced at its bits (BitOps = MACs × weight bits × activation bits; its weight at
        weight bits / 8 bytes). A policy that also prunes or factorizes is priced by the
        sub-network's SearchSpace.
        """
        policy = candidate if isinstance(candidate, Policy) else self.policy(candidate)
        if policy.arch is None:
            raise ValueError("the policy names no sub-network (policy.arch is None)")
        if any(genes.prune > 0 or genes.rank < 1 for genes in policy.layers.values()):
            return self.subnet(policy.arch)[1].cost(policy)
        rows, weights = self._full_precision_rows(policy.arch)
        priced = []
        for row in rows.layers:
            genes = policy.layers.get(row.name)
            if genes is None or (genes.weight_bits, genes.act_bits) == (FP32_BITS, FP32_BITS):
                priced.append(row)
            else:
                w = weights[row.name]
                priced.append(linear_cost(row.name, row.type, row.macs, w, row.params - w, genes.weight_bits,
                                           genes.act_bits))
        return CostReport(tuple(priced))

    def latency_ms(self, candidate: QuantSubnet | SubnetConfig, table: LatencyTable) -> float:
        """Estimated latency (ms per batch of the table's target) of ``candidate``'s quantized sub-network
        from a :class:`~autocompress.hardware.lut.LatencyTable`, with the calibration of ``reference``.

        On ``ort-cpu`` its layers at 8 bits or fewer are looked up in int8 (as the int8 file runs them:
        every such bit-width alike), the others in fp32; a :class:`SubnetConfig` is the float sub-network.
        The reference is calibrated once on it and ``calibration`` random sub-networks, some of their
        stages int8 (:meth:`calibrate_latency`). Cached per architecture and int8 layers.
        """
        if isinstance(candidate, SubnetConfig):
            candidate = QuantSubnet.full_precision(candidate)
        arch = _key(candidate.config.to_vector())
        low = tuple(table.times_int8 and runs_in_int8(*pair) for pair in candidate.bits)  # per slot: int8 or not
        key = (arch, low, id(table))
        if key not in self._latency:  # layer names only for a new key: the evolution calls this per child
            int8 = {name for name, genes in self.policy(candidate).layers.items()
                    if table.times_int8 and runs_in_int8(genes.weight_bits, genes.act_bits)}
            self.calibrate_latency(table)
            calls = [(name, replace(config, int8=name in int8)) for name, config in self._calls(arch)]
            self._latency[key] = table.estimate_calls(calls, self._reference_calls()).total_ms
        return self._latency[key]

    def reference_latency_ms(self, table: LatencyTable) -> float:
        """The estimated latency of ``reference`` itself (what latency ratios are ratios of)."""
        self.calibrate_latency(table)
        calls = self._reference_calls()
        return table.estimate_calls(calls, calls).total_ms

    def calibrate_latency(self, table: LatencyTable, calibration: int = 8) -> None:
        """Calibrate ``table`` for ``reference`` on ``calibration`` random sub-networks measured whole, each
        stage in int8 or fp32 at random (on ``ort-cpu``; float sub-networks elsewhere), unless it already
        is on some with int8 layers (:meth:`~autocompress.hardware.lut.LatencyTable.calibrate`)."""
        if self.reference is None:
            raise ValueError("latency estimates need the reference model: ElasticSpace(..., reference=model)")
        known = table.overheads.get(layers_signature(self._reference_calls()), {})
        if known.get("calibration_models", 1) > 1 and (known.get("int8_models", 0) > 0 or not table.times_int8):
            return
        rng = np.random.default_rng([self.seed, 47])
        derived = []
        for _ in range(calibration):
            config = self.supernet.random(rng)
            bits = tuple((INT8_BITS, INT8_BITS) if table.times_int8 and rng.random() < 0.5 else FULL_PRECISION
                         for _ in config.stages)
            derived.append(apply_policy(self.supernet.extract(config).eval(), self.policy(QuantSubnet(config, bits))))
        table.calibrate(self.reference, self.example, derived)

    def _calls(self, arch: Arch) -> list[tuple[str, LayerConfig]]:
        if arch not in self._layer_calls:
            self._layer_calls[arch] = layer_configs(self.supernet.extract(self.config(arch)), self.example)
        return self._layer_calls[arch]

    def _reference_calls(self) -> list[tuple[str, LayerConfig]]:
        if self._reference_layer_calls is None:
            self._reference_layer_calls = layer_configs(self.reference, self.example)
        return self._reference_layer_calls

    def _full_precision_rows(self, arch: Sequence[float]) -> tuple[CostReport, dict[str, int]]:
        key = _key(arch)
        if key not in self._rows:
            model = self.supernet.extract(self.config(key))
            weights = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, COMPRESSED)}
            self._rows[key] = (count_cost(model, self.example), weights)
        return self._rows[key]


def _key(arch: Sequence[float]) -> Arch:
    return tuple(float(v) for v in arch)
