"""One APQ candidate — a sub-network and the bit-widths of each stage — as a vector and as a Policy.

:class:`QuantSubnet` is the joint genotype the ``apq`` strategy evolves:
``(depth, width, kernel, weight_bits, act_bits)`` per stage (:meth:`QuantSubnet.to_vector`,
invertible by :meth:`QuantSubnet.from_vector`). The study stores candidates as ordinary
:class:`~autocompress.policy.Policy` objects: ``arch`` holds the architecture
(``SubnetConfig.to_vector()``) and each stage's Conv/Linear layers of the extracted sub-network
(the supernet's ``stage_layers``) carry the stage's bits as ``weight_bits`` / ``act_bits`` genes
(:meth:`QuantSubnet.to_policy`, inverted by :meth:`QuantSubnet.from_policy`), so that the
evaluator, the cache and the Pareto front treat them like every other strategy's policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.elastic.supernet import ElasticModel, SubnetConfig
from autocompress.policy import InputSpec, LayerGenes, Policy, check_bits

FULL_PRECISION = (32, 32)
PER_STAGE = 5  # depth, width, kernel, weight_bits, act_bits


@dataclass(frozen=True)
class QuantSubnet:
    """A sub-network architecture and the (weight, activation) bits of each of its stages (32 = float)."""

    config: SubnetConfig
    bits: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if len(self.bits) != len(self.config.stages):
            raise ValueError(f"bits for {len(self.bits)} stages; the architecture has {len(self.config.stages)}")
        for weight, act in self.bits:
            check_bits(weight, "weight_bits")
            check_bits(act, "act_bits")

    @classmethod
    def full_precision(cls, config: SubnetConfig) -> QuantSubnet:
        return cls(config, (FULL_PRECISION,) * len(config.stages))

    # ---------------------------------------------------------------- vector
    def to_vector(self) -> np.ndarray:
        """(depth, width, kernel, weight_bits, act_bits) per stage, flattened."""
        arch = self.config.to_vector().reshape(-1, 3)
        return np.concatenate([arch, np.array(self.bits, dtype=float)], axis=1).ravel()

    @classmethod
    def from_vector(cls, vector: Sequence[float]) -> QuantSubnet:
        rows = np.asarray(vector, dtype=float)
        if rows.ndim != 1 or len(rows) % PER_STAGE:
            raise ValueError(f"a candidate vector holds (depth, width, kernel, weight_bits, act_bits) per stage; "
                             f"got {rows.size} values")
        rows = rows.reshape(-1, PER_STAGE)
        return cls(SubnetConfig.from_vector(rows[:, :3].ravel()),
                   tuple((int(round(w)), int(round(a))) for w, a in rows[:, 3:]))

    def features(self) -> np.ndarray:
        """The accuracy predictors' input: the architecture, then each bit-width as its quantization
        step ``2^-bits`` (0 at full precision), so that full-precision labels and quantized ones share columns."""
        steps = [0.0 if b >= 32 else 2.0 ** -b for pair in self.bits for b in pair]
        return np.concatenate([self.config.to_vector(), steps])

    # ---------------------------------------------------------------- policy
    def to_policy(self, supernet: ElasticModel, inputs: tuple[InputSpec, ...] | None = None) -> Policy:
        """The Policy of this candidate on ``supernet.extract(self.config)`` (``arch`` set, stage bits per layer)."""
        layers = {name: LayerGenes(weight_bits=weight, act_bits=act)
                  for names, (weight, act) in zip(supernet.stage_layers(self.config), self.bits, strict=True)
                  for name in names}
        return Policy(layers=layers, inputs=inputs, arch=tuple(float(v) for v in self.config.to_vector()))

    @classmethod
    def from_policy(cls, policy: Policy, supernet: ElasticModel) -> QuantSubnet:
        """The candidate a policy of :meth:`to_policy` encodes; ValueError when its bits differ within a stage."""
        if policy.arch is None:
            raise ValueError("the policy names no sub-network (policy.arch is None)")
        config = SubnetConfig.from_vector(policy.arch)
        bits = []
        for index, names in enumerate(supernet.stage_layers(config)):
            pairs = {(policy.genes(n).weight_bits, policy.genes(n).act_bits) for n in names} or {FULL_PRECISION}
            if len(pairs) > 1:
                raise ValueError(f"stage {index}: its layers have different bits {sorted(pairs)}; "
                                 "a candidate has one (weight, activation) pair per stage")
            bits.append(pairs.pop())
        return cls(config, tuple(bits))
