"""Elastic CNN supernets (APQ / Once-for-All style weight sharing): 1D for MNIST-1D, 2D for digits.

One set of weights holds every sub-network of a space of architectures. Per stage:

- **depth** (blocks used, from the first): ``depths`` choices, e.g. (1, 2, 3);
- **width** (expand ratio of the stage's channels): ``widths``, e.g. (0.5, 0.75, 1.0) — a
  sub-network uses the *first* ``round(width · channels)`` output channels of each conv
  (OFA's channel slicing; the supernet's training makes the first channels the important ones);
- **kernel** size: ``kernels``, e.g. (3, 5, 7) — the centre of the stage's largest kernel
  (OFA's centre crop, without its kernel-transformation matrices); square in 2D.

A block is Conv → BatchNorm → ReLU; the first block of every stage after the first halves
the length (or height and width; stride 2). The head is global average pooling and a Linear
layer on the active channels. Sub-networks share BatchNorm *affine* parameters by slicing;
their running statistics differ, so :func:`~autocompress.elastic.train.subnet_metric`
re-estimates them on training batches (as OFA does). :class:`ElasticCNN1d` and
:class:`ElasticCNN2d` differ only in their number of spatial dimensions (:class:`ElasticCNN`).

The interface a user-supplied elastic model needs (:class:`ElasticModel`, docs/elastic.md):
``choices()`` (per stage, the legal depth / width / kernel values), ``forward(x, config)``,
``extract(config) -> nn.Module`` returning a standalone model with the inherited weights and
``stage_layers(config)`` naming each stage's Conv/Linear layers in that model (where per-stage
bit-widths go); :class:`ElasticMixin` derives ``largest``, ``smallest``, ``random`` and
``validate`` from ``choices()``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

STAGE_FIELDS = ("depth", "width", "kernel")


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
    """What the APQ machinery needs of an elastic supernet (see docs/elastic.md)."""

    def choices(self) -> list[dict[str, tuple]]: ...

    def forward(self, x: Tensor, config: SubnetConfig | None = None) -> Tensor: ...

    def extract(self, config: SubnetConfig) -> nn.Module: ...

    def stage_layers(self, config: SubnetConfig) -> list[list[str]]: ...

    def largest(self) -> SubnetConfig: ...

    def smallest(self) -> SubnetConfig: ...

    def random(self, rng: np.random.Generator) -> SubnetConfig: ...

    def validate(self, config: SubnetConfig) -> SubnetConfig: ...


class ElasticMixin:
    """``largest``, ``smallest``, ``random`` and ``validate`` of a supernet, from its ``choices()``."""

    def choices(self) -> list[dict[str, tuple]]:
        raise NotImplementedError

    def largest(self) -> SubnetConfig:
        return SubnetConfig(tuple(StageConfig(*(max(c[f]) for f in STAGE_FIELDS)) for c in self.choices()))

    def smallest(self) -> SubnetConfig:
        return SubnetConfig(tuple(StageConfig(*(min(c[f]) for f in STAGE_FIELDS)) for c in self.choices()))

    def random(self, rng: np.random.Generator) -> SubnetConfig:
        """Each stage's depth, width and kernel drawn uniformly from its choices."""
        return SubnetConfig(tuple(StageConfig(int(rng.choice(c["depth"])), float(rng.choice(c["width"])),
                                              int(rng.choice(c["kernel"]))) for c in self.choices()))

    def validate(self, config: SubnetConfig) -> SubnetConfig:
        """``config`` itself if every stage's values are legal, else a ValueError naming the first that is not."""
        choices = self.choices()
        if len(config.stages) != len(choices):
            raise ValueError(f"the supernet has {len(choices)} stages; the config gives {len(config.stages)}")
        for i, (stage, allowed) in enumerate(zip(config.stages, choices, strict=True)):
            for field in STAGE_FIELDS:
                if getattr(stage, field) not in allowed[field]:
                    raise ValueError(f"stage {i}: {field} {getattr(stage, field)!r} not allowed; "
                                     f"allowed: {list(allowed[field])}")
        return config


_CONVS: dict[int, tuple[type[nn.Module], type[nn.Module]]] = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}
_CONV_FNS = {1: F.conv1d, 2: F.conv2d}


class _Block(nn.Module):
    """Conv → BatchNorm → ReLU at the largest kernel and width; runs (or extracts) any slice of it."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        conv, norm = _CONVS[dims]
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = norm(out_channels)
        self.dims, self.stride = dims, stride

    def sliced(self, in_channels: int, out_channels: int, kernel: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The first channels and the centre ``kernel`` of the weights; the first channels of the BN tensors."""
        start = (self.conv.kernel_size[0] - kernel) // 2
        crop = (slice(start, start + kernel),) * self.dims
        weight = self.conv.weight[(slice(None, out_channels), slice(None, in_channels), *crop)]
        bn = {name: getattr(self.bn, name)[:out_channels] for name in ("weight", "bias", "running_mean", "running_var")}
        return weight, bn

    def forward(self, x: Tensor, out_channels: int, kernel: int) -> Tensor:
        weight, bn = self.sliced(x.shape[1], out_channels, kernel)
        y = _CONV_FNS[self.dims](x, weight, stride=self.stride, padding=kernel // 2)
        y = F.batch_norm(y, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], self.training,
                         self.bn.momentum, self.bn.eps)
        return F.relu(y)

    def extracted(self, in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
        """A standalone ``Sequential(conv, bn, relu)`` of this slice with copied weights and BN statistics."""
        conv_type, norm_type = _CONVS[self.dims]
        weight, bn = self.sliced(in_channels, out_channels, kernel)
        conv = conv_type(in_channels, out_channels, kernel, stride=self.stride, padding=kernel // 2, bias=False)
        norm = norm_type(out_channels, eps=self.bn.eps, momentum=self.bn.momentum)
        with torch.no_grad():
            conv.weight.copy_(weight)
            for name, value in bn.items():
                getattr(norm, name).copy_(value)
        return nn.Sequential(OrderedDict(conv=conv, bn=norm, relu=nn.ReLU()))


class ElasticCNN(ElasticMixin, nn.Module):
    """Elastic depth / width / kernel per stage over ``dims`` spatial dimensions; see the module docstring.

    ``channels`` (full width per stage) and ``kernels`` default to the subclass's
    ``default_channels`` / ``default_kernels``.
    """

    dims: ClassVar[int] = 1
    default_channels: ClassVar[tuple[int, ...]] = (32, 64, 128)
    default_kernels: ClassVar[tuple[int, ...]] = (3, 5, 7)

    def __init__(
        self,
        channels: Sequence[int] | None = None,
        depths: Sequence[int] = (1, 2, 3),
        widths: Sequence[float] = (0.5, 0.75, 1.0),
        kernels: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        channels = self.default_channels if channels is None else channels
        kernels = self.default_kernels if kernels is None else kernels
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
                blocks.append(_Block(self.dims, previous if depth == 0 else width, width, max(self.kernels), stride))
            stages.append(nn.ModuleList(blocks))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(self.channels[-1], num_classes)

    # ---------------------------------------------------------------- configurations
    def choices(self) -> list[dict[str, tuple]]:
        return [{"depth": self.depths, "width": self.widths, "kernel": self.kernels} for _ in self.channels]

    def active_channels(self, config: SubnetConfig) -> list[int]:
        return [max(1, int(round(stage.width * c))) for stage, c in zip(config.stages, self.channels, strict=True)]

    def stage_layers(self, config: SubnetConfig) -> list[list[str]]:
        """Names of each stage's convs in ``extract(config)``."""
        return [[f"stage{i}.{b}.conv" for b in range(stage.depth)] for i, stage in enumerate(self.validate(config).stages)]

    # ---------------------------------------------------------------- running
    def forward(self, x: Tensor, config: SubnetConfig | None = None) -> Tensor:
        config = self.validate(config or self.largest())
        for stage, blocks, width in zip(config.stages, self.stages, self.active_channels(config), strict=True):
            for block in list(blocks)[: stage.depth]:
                x = block(x, width, stage.kernel)
        x = x.flatten(2).mean(dim=2)
        return F.linear(x, self.head.weight[:, : x.shape[1]], self.head.bias)

    def extract(self, config: SubnetConfig) -> nn.Module:
        """A standalone model of ``config`` with the inherited (copied) weights and BN statistics.

        ``Sequential(stage0, stage1, ..., pool, head)``; stage ``i``'s block ``b`` is
        ``stage{i}.{b}`` = ``Sequential(conv, bn, relu)`` (see :meth:`stage_layers`).
        """
        config = self.validate(config)
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        previous = self.in_channels
        for index, (stage, blocks, width) in enumerate(zip(config.stages, self.stages, self.active_channels(config),
                                                           strict=True)):
            extracted = []
            for block in list(blocks)[: stage.depth]:
                extracted.append(block.extracted(previous, width, stage.kernel))
                previous = width
            parts[f"stage{index}"] = nn.Sequential(*extracted)
        head = nn.Linear(previous, self.head.out_features)
        with torch.no_grad():
            head.weight.copy_(self.head.weight[:, :previous])
            head.bias.copy_(self.head.bias)
        parts["pool"] = _GlobalAvgPool()
        parts["head"] = head
        return nn.Sequential(parts)


class ElasticCNN1d(ElasticCNN):
    """Elastic 1D CNN for MNIST-1D (inputs (N, C, L)): channels 32/64/128, kernels 3/5/7 by default."""

    dims = 1


class ElasticCNN2d(ElasticCNN):
    """Elastic 2D CNN for the 8x8 digits (inputs (N, C, H, W)): channels 16/32/64 (as the zoo's
    digits CNN), kernels 3/5 by default; 8x8 → 4x4 → 2x2 over the three stages."""

    dims = 2
    default_channels = (16, 32, 64)
    default_kernels = (3, 5)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(dim=2)
