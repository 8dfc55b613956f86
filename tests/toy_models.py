"""Small models used by several tests (not part of the zoo)."""

import torch
from torch import nn


class ResidualDW(nn.Module):
    """Stem conv, a depthwise-separable residual block, flatten into a Linear head."""

    def __init__(self, length: int = 40) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.dw = nn.Conv1d(16, 16, 3, padding=1, groups=16)
        self.bn2 = nn.BatchNorm1d(16)
        self.pw = nn.Conv1d(16, 16, 1)
        self.bn3 = nn.BatchNorm1d(16)
        self.fc1 = nn.Linear(16 * length, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        y = self.bn3(self.pw(torch.relu(self.bn2(self.dw(x)))))
        x = x + y
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Oddities(nn.Module):
    """A model with layers the tool must leave alone (and say why)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv3d = nn.Conv3d(1, 1, 1)
        self.unused = nn.Linear(4, 4)
        self.shared = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.grouped(torch.relu(self.conv(x))))
        x = self.conv3d(x.unsqueeze(1)).squeeze(1)
        x = x.mean(dim=(2, 3))
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(x)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.second = nn.Linear(5, 2)  # wrong in_features: forward fails here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))
