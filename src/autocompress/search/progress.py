"""What a running search shows: the live bar (candidates done, the front's best values) and, outside a
terminal, one line per finished candidate."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autocompress.search.objectives import Objective, Record
from autocompress.search.study import Study


def progress_bar(console: Console) -> Progress:
    """The live bar; its task has the fields ``name`` (the bare description) and ``front``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[front]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def front_summary(study: Study, objectives: Sequence[Objective]) -> str:
    """The Pareto front's size and each objective's best value on it (the bar's ``front`` field)."""
    front = study.pareto_front()
    best = []
    for o in objectives:
        values = [r.values[o.key] for r in front if o.key in r.values]
        if values:
            value = max(values) if o.direction == "maximize" else min(values)
            best.append(f"{o.name} {'max' if o.direction == 'maximize' else 'min'} {value:.4g}")
    return f"front {len(front)} | " + ", ".join(best)


def candidate_line(record: Record, objectives: Sequence[Objective], strategy: str) -> str:
    """One finished candidate, for a console that is not a terminal (no live bar)."""
    keys = [o.key for o in objectives] + (["latency_ratio"] if "latency_ratio" in record.values else [])
    values = ", ".join(f"{k} {record.values[k]:.4g}" for k in keys if k in record.values)
    drop = record.values.get("accuracy_drop")
    return (f"{strategy}: candidate #{record.number} done in {record.seconds:.1f} s: {values}"
            + (f" (drop {drop:+.2f})" if drop is not None else ""))
