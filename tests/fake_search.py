"""A fast fake search context shared by the strategy tests.

The fake context scores a policy with a synthetic, deterministic accuracy (98 minus
layer-dependent penalties that grow with pruning and shrink with rank / bits, plus an
interaction term, so single-layer sweeps underestimate the joint drop) and takes its costs
from ``space.cost``. It caches records by policy, counts real evaluations against a budget
that spans every resume (like the study's runner) and returns "skipped" records beyond it.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from autocompress.policy import Policy
from autocompress.search.objectives import COST_KEYS, Record, parse_objectives
from autocompress.space import SearchSpace

SENSITIVITY = {"conv1": 4.0, "conv2": 0.8, "conv3": 0.3, "fc1": 1.0, "conv4": 0.5, "conv5": 0.2, "conv6": 1.5}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv1d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv1d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 20, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def synthetic_accuracy(policy: Policy) -> float:
    drop = 0.0
    for name, s in SENSITIVITY.items():
        genes = policy.genes(name)
        drop += s * (4 * genes.prune**2 + 3 * (1 - genes.rank) ** 2 + 24 * 2.0 ** (-genes.weight_bits / 1.5))
    return max(10.0, 98.0 - drop - 0.05 * drop**2)


class FakeContext:
    """A SearchContext: synthetic metric, analytic costs, a policy cache shared across resumes."""

    def __init__(self, space: SearchSpace, budget: int, seed: int = 0, cache: dict | None = None, *,
                 model: nn.Module | None = None, example_input: object = None) -> None:
        self.space = space
        self.model, self.example_input = model, example_input  # what a strategy that times layers itself needs
        self.latency_settings: dict | None = None
        self.latency_model = None
        self.objectives = parse_objectives(["accuracy", "flops"])
        self.constraints = ()
        self.budget, self.seed = budget, seed
        self.rng = np.random.default_rng(seed)
        self.cache: dict[str, Record] = {} if cache is None else cache  # the study: every real evaluation
        self.requested: list[str] = []  # every policy asked for, cached or not, in order
        self.real: list[str] = []  # policies evaluated for real by this context
        self.logs: list[str] = []
        self.statuses: list[str] = []
        self.store: dict = {}  # what the strategy keeps in the study (SearchContext.keep)
        self.base = space.cost(Policy())

    def remaining(self) -> int:
        return max(0, self.budget - len(self.cache))

    def cost(self, policy: Policy):  # noqa: ANN201
        return self.space.cost(policy)

    @property
    def original(self) -> Record:
        return Record(-1, Policy(), "complete", self.values(Policy(), 98.0))

    def values(self, policy: Policy, metric: float) -> dict[str, float]:
        cost = self.space.cost(policy)
        values = {"metric": metric, "metric_before_finetune": metric, "metric_original": 98.0, "accuracy_drop": 98.0 - metric}
        values.update({k: float(getattr(cost, k)) for k in COST_KEYS})
        values.update({f"{k}_ratio": getattr(cost, k) / getattr(self.base, k) for k in COST_KEYS})
        return values

    def evaluate(self, policy: Policy, **tags: object) -> Record:
        return self.evaluate_many([policy], **tags)[0]

    def evaluate_many(self, policies: list[Policy], **tags: object) -> list[Record]:
        out = []
        for policy in policies:
            key = self.key(policy)
            self.requested.append(key)
            if key not in self.cache:
                if self.remaining() <= 0:
                    out.append(Record(-1, policy, "skipped", tags=dict(tags)))
                    continue
                self.cache[key] = Record(len(self.cache), policy, "complete", self.values(policy, self.accuracy(policy)), dict(tags))
                self.real.append(key)
            out.append(self.cache[key])
        return out

    def key(self, policy: Policy) -> str:
        """The cache key of a policy (a subclass may count more than its layers)."""
        return key_of(policy)

    def accuracy(self, policy: Policy) -> float:
        return synthetic_accuracy(policy)

    def history(self) -> list[Record]:
        return list(self.cache.values())

    def log(self, message: str) -> None:
        self.logs.append(message)

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def kept(self, key: str) -> object:
        return self.store.get(key)

    def keep(self, key: str, value: object) -> None:
        self.store[key] = json.loads(json.dumps(value))  # stored as JSON, like the study's meta


def key_of(policy: Policy) -> str:
    return str(sorted((n, g.model_dump()) for n, g in policy.layers.items() if not g.is_identity))


def records_of(ctx: FakeContext, **tags: object) -> list[Record]:
    return [r for r in ctx.cache.values() if all(r.tags.get(k) == v for k, v in tags.items())]
