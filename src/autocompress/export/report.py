"""What :func:`~autocompress.export.export` returns: the file to deploy and, for every variant made or
tried (the reference model's fp32 file, fp32, static and dynamic int8), its plan, its check, its
metric and latency when measured, and why the chosen one won."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.export.agreement import OutputAgreement
from autocompress.export.plan import Int8Plan

__all__ = ["VARIANTS", "ExportReport", "Variant"]

#: the files an export makes: the reference model's fp32 file (when measured), the model's fp32 file, its int8 files
VARIANTS = ("original", "fp32", "int8-static", "int8-dynamic")


@dataclass(frozen=True)
class Variant:
    """One file an export made (``made``) or tried (``reason``: why it could not be made or measured).

    ``plan``: the layers an int8 file runs in int8; ``check``: its outputs against its reference (an
    fp32 or dynamic int8 file against PyTorch, a static int8 file against the fp32 file).
    ``metric`` (on the task's test split, else val), ``latency_ms`` (median, timed side by side with
    the other variants), ``latency_ratio`` and ``drop`` (against the reference model's file, else the
    fp32 file) are None unless measured.
    """

    name: str
    made: bool = True
    reason: str = ""
    plan: Int8Plan | None = None
    check: OutputAgreement | None = None
    metric: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    drop: float | None = None
    bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON record (``meta.json["deploy"]["variants"]``): ``made`` and the figures known."""
        if not self.made:
            return {"made": False, "reason": self.reason}
        figures = {"metric": self.metric, "latency_ms": self.latency_ms, "bytes": self.bytes,
                   "latency_ratio": self.latency_ratio, "drop": self.drop}
        record: dict[str, Any] = {"made": True, **{k: v for k, v in figures.items() if v is not None}}
        if self.plan is not None:
            record["plan"] = self.plan.as_dict()
        if self.check is not None:
            record["check"] = {"reference": self.check.reference, "max_abs_diff": self.check.max_abs_diff,
                               "min_cosine": self.check.min_cosine, "samples": self.check.samples}
        return record


@dataclass(frozen=True)
class ExportReport:
    """The file to deploy (``path``, variant ``chosen``, ``why``), the files written (``paths``, by
    variant) and every variant made or tried. ``split``: where metrics were taken (None: not
    measured); ``threads`` and ``batch``: how latency was timed."""

    path: Path
    chosen: str
    why: str
    paths: dict[str, Path]
    variants: dict[str, Variant]
    int8: str | bool
    max_drop: float
    split: str | None = None
    threads: int = 1
    batch: int = 32

    @property
    def plan(self) -> Int8Plan | None:
        """The deployed file's plan: the layers it runs in int8 (None for an fp32 file)."""
        return self.variants[self.chosen].plan

    @property
    def check(self) -> OutputAgreement | None:
        """The deployed file's outputs against its reference."""
        return self.variants[self.chosen].check

    @property
    def latency_ms(self) -> float:
        """The deployed file's median latency (NaN unless measured)."""
        latency = self.variants[self.chosen].latency_ms
        return math.nan if latency is None else latency

    def as_dict(self) -> dict[str, Any]:
        """The JSON record a delivered folder keeps as ``meta.json["deploy"]``."""
        return {"file": self.path.name, "chosen": self.chosen, "why": self.why, "int8": self.int8,
                "max_drop": self.max_drop, "split": self.split, "threads": self.threads, "batch": self.batch,
                "variants": {name: v.as_dict() for name, v in self.variants.items()}}

    def __str__(self) -> str:
        plan = self.plan
        layers = f"; {len(plan.int8)} layers in int8, {len(plan.fp32)} in fp32" if plan is not None else ""
        return f"{self.path} ({self.chosen}{layers}): {self.why}"
