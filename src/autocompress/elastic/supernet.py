"""An elastic 1D CNN supernet for MNIST-1D (APQ / Once-for-All style weight sharing).

One set of weights holds every sub-network of a space of architectures. Per stage:

- **depth** (blocks used, from the first): ``depths`` choices, e.g. (1, 2, 3);
- **width** (expand ratio of the stage's channels): ``widths``, e.g. (0.5, 0.75, 1.0) — a
  sub-network uses the *first* ``round(width · channels)`` output channels of each conv
  (OFA's channel slicing; the supernet's training makes the first channels the important ones);
- **kernel** size: ``kernels``, e.g. (3, 5, 7) — the centre of the stage's largest kernel
  (OFA's centre crop, without its kernel-transformation matrices).

A block is Conv1d → BatchNorm → ReLU; the first block of every stage after the first halves
the length (stride 2). The head is global average pooling and a Linear layer on the active
channels. Sub-networks share BatchNorm *affine* parameters by slicing; their running
statistics differ, so :func:`extract` re-estimates them on training batches (as OFA does).

The interface a user-supplied elastic model needs (:class:`ElasticModel`): ``choices()``
(per stage, the legal depth / width / kernel values), ``forward(x, config)``,
``extract(config) -> nn.Module`` returning a standalone model with the inherited weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class StageConfig:
    depth: int
    width: float
    kernel: int


@dataclass(frozen=True)
class SubnetConfig:
    """One architecture of the supernet: a :class:`StageConfig` per stage."""

    stages: tuple[StageConfig, ...]

    def to_vector(self) -> np.ndarray:
        """(depth, width, kernel) per stage, flattened: the encoding shared with the policy genes."""
        return np.array([v for s in self.stages for v in (s.depth, s.width, s.kernel)], dtype=float)

    @classmethod
    def from_vector(cls, vector: Sequence[float]) -> SubnetConfig:
        values = list(vector)
        if len(values) % 3:
            raise ValueError(f"a subnet vector holds (depth, width, kernel) per stage; got {len(values)} values")
        return cls(tuple(StageConfig(int(round(values[i])), float(values[i + 1]), int(round(values[i + 2])))
                         for i in range(0, len(values), 3)))


@runtime_checkable
class ElasticModel(Protocol):
    def choices(self) -> list[dict[str, tuple]]: ...

    def forward(self, x: Tensor, config: SubnetConfig | None = None) -> Tensor: ...

    def extract(self, config: SubnetConfig) -> nn.Module: ...


class _Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.stride = stride

    def sliced(self, in_channels: int, out_channels: int, kernel: int) -> tuple[Tensor, dict[str, Tensor]]:
        full = self.conv.kernel_size[0]
        start = (full - kernel) // 2
        weight = self.conv.weight[:out_channels, :in_channels, start:start + kernel]
        bn = {"weight": self.bn.weight[:out_channels], "bias": self.bn.bias[:out_channels],
              "running_mean": self.bn.running_mean[:out_channels], "running_var": self.bn.running_var[:out_channels]}
        return weight, bn

    def forward(self, x: Tensor, out_channels: int, kernel: int) -> Tensor:
        weight, bn = self.sliced(x.shape[1], out_channels, kernel)
        y = F.conv1d(x, weight, stride=self.stride, padding=kernel // 2)
        y = F.batch_norm(y, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], self.training,
                         self.bn.momentum, self.bn.eps)
        return F.relu(y)


class ElasticCNN1d(nn.Module):
    """Elastic depth / width / kernel per stage; see the module docstring."""

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 2, 3),
        widths: Sequence[float] = (0.5, 0.75, 1.0),
        kernels: Sequence[int] = (3, 5, 7),
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd (centre crop), got {list(kernels)}")
        if not all(0 < w <= 1 for w in widths) or min(depths) < 1:
            raise ValueError(f"widths must be in (0, 1] and depths >= 1, got {list(widths)}, {list(depths)}")
        self.channels, self.depths = tuple(channels), tuple(sorted(depths))
        self.widths, self.kernels = tuple(sorted(widths)), tuple(sorted(kernels))
        self.in_channels = in_channels
        stages = []
        previous = in_channels
        for index, width in enumerate(self.channels):
            blocks = []
            for depth in range(max(self.depths)):
                stride = 2 if (depth == 0 and index > 0) else 1
                blocks.append(_Block(previous if depth == 0 else width, width, max(self.kernels), stride))
            stages.append(nn.ModuleList(blocks))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(self.channels[-1], num_classes)

    # ---------------------------------------------------------------- configurations
    def choices(self) -> list[dict[str, tuple]]:
        return [{"depth": self.depths, "width": self.widths, "kernel": self.kernels} for _ in self.channels]

    def largest(self) -> SubnetConfig:
        return SubnetConfig(tuple(StageConfig(max(self.depths), max(self.widths), max(self.kernels))
                                  for _ in self.channels))

    def smallest(self) -> SubnetConfig:
        return SubnetConfig(tuple(StageConfig(min(self.depths), min(self.widths), min(self.kernels))
                                  for _ in self.channels))

    def random(self, rng: np.random.Generator) -> SubnetConfig:
        return SubnetConfig(tuple(StageConfig(int(rng.choice(self.depths)), float(rng.choice(self.widths)),
                                              int(rng.choice(self.kernels))) for _ in self.channels))

    def validate(self, config: SubnetConfig) -> SubnetConfig:
        if len(config.stages) != len(self.channels):
            raise ValueError(f"the supernet has {len(self.channels)} stages; the config gives {len(config.stages)}")
        for i, stage in enumerate(config.stages):
            for field, allowed in (("depth", self.depths), ("width", self.widths), ("kernel", self.kernels)):
                if getattr(stage, field) not in allowed:
                    raise ValueError(f"stage {i}: {field} {getattr(stage, field)!r} not allowed; allowed: {list(allowed)}")
        return config

    def active_channels(self, config: SubnetConfig) -> list[int]:
        return [max(1, int(round(stage.width * c))) for stage, c in zip(config.stages, self.channels, strict=True)]

    # ---------------------------------------------------------------- running
    def forward(self, x: Tensor, config: SubnetConfig | None = None) -> Tensor:
        config = self.validate(config or self.largest())
        for stage, blocks, width in zip(config.stages, self.stages, self.active_channels(config), strict=True):
            for block in list(blocks)[: stage.depth]:
                x = block(x, width, stage.kernel)
        x = x.mean(dim=2)
        return F.linear(x, self.head.weight[:, : x.shape[1]], self.head.bias)

    def extract(self, config: SubnetConfig) -> nn.Module:
        """A standalone ``nn.Sequential`` of ``config`` with the inherited (copied) weights and BN statistics."""
        config = self.validate(config)
        layers: list[nn.Module] = []
        previous = self.in_channels
        for stage, blocks, width in zip(config.stages, self.stages, self.active_channels(config), strict=True):
            for block in list(blocks)[: stage.depth]:
                weight, bn = block.sliced(previous, width, stage.kernel)
                conv = nn.Conv1d(previous, width, stage.kernel, stride=block.stride, padding=stage.kernel // 2,
                                 bias=False)
                norm = nn.BatchNorm1d(width, eps=block.bn.eps, momentum=block.bn.momentum)
                with torch.no_grad():
                    conv.weight.copy_(weight)
                    for name, value in bn.items():
                        getattr(norm, name).copy_(value)
                layers += [conv, norm, nn.ReLU()]
                previous = width
        head = nn.Linear(previous, self.head.out_features)
        with torch.no_grad():
            head.weight.copy_(self.head.weight[:, :previous])
            head.bias.copy_(self.head.bias)
        return nn.Sequential(*layers, _GlobalAvgPool(), head)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=2)
