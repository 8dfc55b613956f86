"""One APQ candidate — a sub-network and its bit-widths — as a vector and as a Policy.

:class:`QuantSubnet` is the joint genotype the ``apq`` strategy evolves: per stage
``(depth, width, kernel)`` and ``blocks`` bit slots ``(weight_bits, act_bits)``
(:meth:`QuantSubnet.to_vector`, invertible by :meth:`QuantSubnet.from_vector`). Slot ``j`` of a
stage quantizes the stage's ``j``-th layer of ``stage_layers`` (block ``j`` of an
:class:`~autocompress.elastic.ElasticCNN1d`: one conv per block); the last slot also covers the
layers after it, so ``blocks=1`` (the default) gives a whole stage the same bits, and ``blocks``
= the deepest stage's depth gives each block its own (APQ's per-block mixed precision; it
assumes one listed layer per block, as in ElasticCNN1d/2d). Slots past a stage's depth quantize
nothing and are held at full precision, so that equal candidates compare equal. The study
stores candidates as ordinary :class:`~autocompress.policy.Policy` objects: ``arch`` holds the
architecture (``SubnetConfig.to_vector()``) and each Conv/Linear layer of the extracted
sub-network (the supernet's ``stage_layers``) carries its slot's bits as ``weight_bits`` /
``act_bits`` genes (:meth:`QuantSubnet.to_policy`, inverted by :meth:`QuantSubnet.from_policy`),
so that the evaluator, the cache and the Pareto front treat them like every other strategy's policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.elastic.supernet import ElasticModel, SubnetConfig
from autocompress.policy import InputSpec, LayerGenes, Policy, check_bits

FULL_PRECISION = (32, 32)
ARCH_GENES = 3  # depth, width, kernel


def genes_per_stage(blocks: int = 1) -> int:
    """Length of one stage in :meth:`QuantSubnet.to_vector`: the architecture, then ``blocks`` bit pairs."""
    return ARCH_GENES + 2 * blocks


@dataclass(frozen=True)
class QuantSubnet:
    """A sub-network architecture and ``blocks`` (weight, activation) bit pairs per stage (32 = float);
    see the module docstring."""

    config: SubnetConfig
    bits: tuple[tuple[int, int], ...]
    blocks: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, int) or self.blocks < 1:
            raise ValueError(f"blocks (bit slots per stage) must be an integer >= 1, got {self.blocks!r}")
        stages = len(self.config.stages)
        if len(self.bits) != stages * self.blocks:
            raise ValueError(f"{len(self.bits)} bit pairs for {stages} stages of {self.blocks} slot(s) each; "
                             f"need {stages * self.blocks}")
        for weight, act in self.bits:
            check_bits(weight, "weight_bits")
            check_bits(act, "act_bits")
        canonical = tuple(FULL_PRECISION if slot >= stage.depth else tuple(self.bits[i * self.blocks + slot])
                          for i, stage in enumerate(self.config.stages) for slot in range(self.blocks))
        object.__setattr__(self, "bits", canonical)  # slots past a stage's depth quantize nothing

    @classmethod
    def full_precision(cls, config: SubnetConfig, blocks: int = 1) -> QuantSubnet:
        return cls(config, (FULL_PRECISION,) * (len(config.stages) * blocks), blocks)

    def stage_bits(self, stage: int) -> tuple[tuple[int, int], ...]:
        """The bit pairs of ``stage``'s slots."""
        return self.bits[stage * self.blocks:(stage + 1) * self.blocks]

    def block_bits(self, stage: int, block: int) -> tuple[int, int]:
        """The (weight, activation) bits of ``stage``'s block ``block``."""
        return self.stage_bits(stage)[min(block, self.blocks - 1)]

    # ---------------------------------------------------------------- vector
    def to_vector(self) -> np.ndarray:
        """Per stage: depth, width, kernel, then (weight_bits, act_bits) per slot; flattened."""
        arch = self.config.to_vector().reshape(-1, ARCH_GENES)
        bits = np.array(self.bits, dtype=float).reshape(len(arch), 2 * self.blocks)
        return np.concatenate([arch, bits], axis=1).ravel()

    @classmethod
    def from_vector(cls, vector: Sequence[float], blocks: int = 1) -> QuantSubnet:
        rows = np.asarray(vector, dtype=float)
        width = genes_per_stage(blocks)
        if rows.ndim != 1 or len(rows) % width:
            raise ValueError(f"a candidate vector holds (depth, width, kernel) and {blocks} (weight_bits, act_bits) "
                             f"pair(s) per stage; got {rows.size} values")
        rows = rows.reshape(-1, width)
        bits = rows[:, ARCH_GENES:].reshape(-1, 2)
        return cls(SubnetConfig.from_vector(rows[:, :ARCH_GENES].ravel()),
                   tuple((int(round(w)), int(round(a))) for w, a in bits), blocks)

    def features(self) -> np.ndarray:
        """The accuracy predictors' input: the architecture, then each bit-width as its quantization
        step ``2^-bits`` (0 at full precision, and for a slot past its stage's depth), so that
        full-precision labels and quantized ones share columns."""
        steps = [0.0 if b >= 32 else 2.0 ** -b for pair in self.bits for b in pair]
        return np.concatenate([self.config.to_vector(), steps])

    # ---------------------------------------------------------------- policy
    def to_policy(self, supernet: ElasticModel, inputs: tuple[InputSpec, ...] | None = None) -> Policy:
        """The Policy of this candidate on ``supernet.extract(self.config)`` (``arch`` set, each block's bits)."""
        layers = {}
        for stage, names in enumerate(supernet.stage_layers(self.config)):
            for block, name in enumerate(names):
                weight, act = self.block_bits(stage, block)
                layers[name] = LayerGenes(weight_bits=weight, act_bits=act)
        return Policy(layers=layers, inputs=inputs, arch=tuple(float(v) for v in self.config.to_vector()))

    @classmethod
    def from_policy(cls, policy: Policy, supernet: ElasticModel, blocks: int = 1) -> QuantSubnet:
        """The candidate a policy of :meth:`to_policy` encodes; ValueError when the layers of one slot differ in bits."""
        if policy.arch is None:
            raise ValueError("the policy names no sub-network (policy.arch is None)")
        config = SubnetConfig.from_vector(policy.arch)
        bits = []
        for index, names in enumerate(supernet.stage_layers(config)):
            for slot in range(blocks):
                covered = [n for j, n in enumerate(names) if min(j, blocks - 1) == slot]
                pairs = {(policy.genes(n).weight_bits, policy.genes(n).act_bits) for n in covered} or {FULL_PRECISION}
                if len(pairs) > 1:
                    where = f"stage {index}" if blocks == 1 else f"stage {index}, blocks {slot}+"
                    raise ValueError(f"{where}: its layers have different bits {sorted(pairs)}; a candidate has one "
                                     f"(weight, activation) pair per stage{'' if blocks == 1 else ' slot'} "
                                     f"({blocks} slot(s) per stage)")
                bits.append(pairs.pop())
        return cls(config, tuple(bits), blocks)
