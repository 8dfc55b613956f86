"""Bundled zoo architectures: plain nn.Modules, traceable by torch.fx and Torch-Pruning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DigitsCNN", "Mnist1dCNN", "Mnist1dResNetDW", "TabularMLP"]


def _conv1d_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out), nn.ReLU()]


def _conv2d_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class Mnist1dCNN(nn.Module):
    """MNIST-1D CNN: 4 x (Conv1d+BN+ReLU) with two max-pools, then Linear 1280->256->10.

    Input (N, 1, 40); channels 1->32(k5)->64(k5)->pool->128(k3)->128(k3)->pool; 415,690 params.
    """

    def __init__(self, num_classes: int = 10, length: int = 40) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv1d_bn_relu(1, 32, 5),
            *_conv1d_bn_relu(32, 64, 5),
            nn.MaxPool1d(2),
            *_conv1d_bn_relu(64, 128, 3),
            *_conv1d_bn_relu(128, 128, 3),
            nn.MaxPool1d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * (length // 4), 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class DigitsCNN(nn.Module):
    """8x8 digits CNN: Conv2d 1->16->32, pool, 32->64, pool, Linear 256->10 (all convs +BN+ReLU)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv2d_bn_relu(1, 16),
            *_conv2d_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *_conv2d_bn_relu(32, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class TabularMLP(nn.Module):
    """MLP for tabular data: (Linear [+BN] +ReLU [+Dropout]) per hidden width, then Linear."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class DepthwiseSeparableBlock(nn.Module):
    """Depthwise Conv1d+BN+ReLU, pointwise Conv1d+BN, residual add, ReLU.

    The shortcut is the identity when shapes match, else a strided 1x1 Conv1d+BN projection.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            c_in, c_in, kernel, stride=stride, padding=kernel // 2, groups=c_in, bias=False
        )
        self.bn1 = nn.BatchNorm1d(c_in)
        self.relu1 = nn.ReLU()
        self.pointwise = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.pointwise(self.relu1(self.bn1(self.depthwise(x)))))
        return self.relu2(out + self.shortcut(x))


class Mnist1dResNetDW(nn.Module):
    """MNIST-1D residual net of depthwise-separable blocks (coupled channels for pruning).

    Stem Conv1d 1->32 (k5) +BN+ReLU; stages (32, 32) -> (64 stride 2, 64) -> (128 stride 2, 128);
    global average pool; Linear 128->10.
    """

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, widths[0], 5, padding=2, bias=False), nn.BatchNorm1d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        width = widths[0]
        for stage, size in enumerate(widths):
            blocks.append(DepthwiseSeparableBlock(width, size, stride=1 if stage == 0 else 2))
            blocks.append(DepthwiseSeparableBlock(size, size))
            width = size
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
