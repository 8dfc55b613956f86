"""What :func:`~autocompress.pipeline.compress` returns: the measured candidates (each rebuilds and exports
itself with the settings that measured it), the search's front, the finalists and the best one."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.budget import Constraint
from autocompress.evaluate import Evaluator
from autocompress.files import atomic_write
from autocompress.policy import Policy
from autocompress.saving import save
from autocompress.search.objectives import Record
from autocompress.search.study import Study
from autocompress.space import SearchSpace
from autocompress.task import Task

__all__ = ["Candidate", "CompressResult"]


@dataclass
class Candidate:
    """One stored, measured candidate that can rebuild itself with exactly the settings that measured it."""

    record: Record
    stage: str  # "search" (after finetune_steps) or "final" (after final_finetune)
    settings: dict[str, Any]
    result: CompressResult = field(repr=False)
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def policy(self) -> Policy:
        return self.record.policy

    @property
    def values(self) -> dict[str, float]:
        return dict(self.record.values)

    @property
    def metric(self) -> float:
        return self.record.values["metric"]

    @property
    def accuracy_drop(self) -> float:
        return self.record.values["accuracy_drop"]

    @property
    def cost_ratio(self) -> float:
        """The target's value (e.g. the measured latency ratio)."""
        return self.record.values.get(self.result.target.key, math.nan)

    def model(self) -> nn.Module:
        """The compressed model, rebuilt and fine-tuned with the settings that measured it (cached)."""
        if self._model is None:
            r = self.result
            evaluated = Evaluator(r.task, **self.settings).evaluate(r.model, self.policy, space=r.space)
            self._model = evaluated.model.eval()
        return self._model

    def export_settings(self) -> dict[str, Any]:
        """What :func:`autocompress.export.export` takes from this candidate: its model, the original it is
        measured against, the task, the output selector, ``max_drop`` and the latency batch."""
        r = self.result
        return {"model": self.model(), "original": r.model, "task": r.task, "output": r.space.output,
                "max_drop": r.max_drop, "batch": r.latency_batch}

    def export(self, directory: str | Path, *, int8: bool | str = "auto") -> Path:
        """Write the file to deploy (``model.onnx``) and policy/state_dict/meta to ``directory``; its path.

        :func:`autocompress.export.export` makes and measures the files (``int8="auto"``: int8 where it is
        measured faster and within the drop; True: the faster int8 file; False: fp32; every variant is
        timed side by side with the original's fp32 file); ``meta.json["deploy"]`` keeps its report.
        """
        from autocompress.export import export

        directory = Path(directory)
        save(self.model(), directory)  # policy.json, state_dict.pt and meta.json: rebuilt from the original
        report = export(self, directory, int8=int8, latency=True)
        r = self.result
        meta_path = directory / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["deploy"] = {**report.as_dict(), "candidate": self.record.number, "stage": self.stage,
                          "target": str(r.target), "measured": self.values, "settings": self.settings}
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
        return report.path

    def __str__(self) -> str:
        return (f"#{self.record.number} ({self.stage}): {self.result.task.metric_name} {self.metric:.2f} "
                f"(drop {self.accuracy_drop:+.2f}), {self.result.target.key} {self.cost_ratio:.3g}")


@dataclass
class CompressResult:
    """What :func:`~autocompress.pipeline.compress` found: the search's front, the finalists and the best candidate."""

    study: Study
    final: Study | None
    model: nn.Module = field(repr=False)
    task: Task = field(repr=False)
    space: SearchSpace = field(repr=False)
    target: Constraint
    max_drop: float
    settings: dict[str, Any]
    final_settings: dict[str, Any]
    latency_batch: int = 32
    notes: list[str] = field(default_factory=list)

    def _candidates(self, study: Study | None, stage: str, settings: dict[str, Any]) -> list[Candidate]:
        if study is None:
            return []
        return [Candidate(r, stage, settings, self) for r in study.completed()]

    def candidates(self) -> list[Candidate]:
        """Every measured candidate: the search's, then the finalists' (after the final fine-tune)."""
        return [*self._candidates(self.study, "search", self.settings),
                *self._candidates(self.final, "final", self.final_settings)]

    def finalists(self) -> list[Candidate]:
        return self._candidates(self.final, "final", self.final_settings)

    def _meets(self, candidate: Candidate) -> bool:
        return self.target.satisfied(candidate.values) and candidate.accuracy_drop <= self.max_drop

    def best(self) -> Candidate | None:
        """The finalist meeting the target and ``max_drop`` with the best metric (then the lowest cost); None if none does."""
        meeting = [c for c in self.finalists() if self._meets(c)]
        if not meeting:
            return None
        return min(meeting, key=lambda c: (-c.metric, c.cost_ratio, c.record.number))

    def nearest(self) -> str:
        """How close the candidates came to the target and ``max_drop`` (what to relax when best() is None)."""
        pool = self.finalists() or self._candidates(self.study, "search", self.settings)
        if not pool:
            return "no candidate was measured"

        def gap(c: Candidate) -> float:
            return self.target.violation(c.values) / max(abs(self.target.bound), 1e-12) + max(0.0, c.accuracy_drop - self.max_drop)

        closest = min(pool, key=gap)
        return (f"closest: {closest} (needs {self.target} and accuracy_drop<={self.max_drop:g})"
                + (f"; {'; '.join(self.notes)}" if self.notes else ""))

    def front(self) -> list[Candidate]:
        """The search's Pareto front (metric against the target's cost), mildest first."""
        key = self.target.key
        pool = [c for c in self._candidates(self.study, "search", self.settings) if key in c.values]
        front = [c for c in pool if not any(
            o.metric >= c.metric and o.values[key] <= c.values[key] and (o.metric > c.metric or o.values[key] < c.values[key])
            for o in pool)]
        return sorted(front, key=lambda c: -c.values[key])

    def plot(self, path: str | Path) -> Path:
        """A PNG of every candidate (metric against the target's cost), the front and the finalists."""
        import numpy as np

        from autocompress.search.plot import plot_front

        key = self.target.key
        pool = [c for c in self.candidates() if key in c.values]
        front = {id(c) for c in self.front()}
        points = np.array([[c.values[key], c.metric] for c in pool]).reshape(-1, 2)
        labels = [f"#{c.record.number}" + (" final" if c.stage == "final" else "") for c in pool]
        mask = np.array([id(c) in front or c.stage == "final" for c in pool], dtype=bool)
        original = self.study.meta.get("original") or {}
        return plot_front(points, mask, x_label=key, y_label=self.task.metric_name, path=path, annotate=labels,
                          original=(original.get(key, 1.0), original.get("metric", math.nan)),
                          title=f"{type(self.model).__name__}: target {self.target}")

    @property
    def training_steps(self) -> int:
        """Training steps spent: every candidate's fine-tune, the learning-rate trials and the final ones."""
        def spent(study: Study, steps: Any) -> int:
            return len(study.records({"complete", "failed"})) * int(steps or 0)

        trials = sum(spent(Study.open(self.study.storage, t["study"]), t["steps"]) for t in self.study.meta.get("lr_studies") or [])
        finals = 0 if self.final is None else spent(self.final, self.final_settings.get("finetune_steps"))
        return trials + spent(self.study, self.settings.get("finetune_steps")) + finals

    def summary(self) -> str:
        best = self.best()
        head = f"target {self.target}, max_drop {self.max_drop:g}: "
        return head + (f"best {best}" if best is not None else f"no candidate meets both; {self.nearest()}")
