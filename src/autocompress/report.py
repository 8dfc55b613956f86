"""Terminal tables (rich) for layer inventories, costs and evaluation results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.table import Table

from autocompress.cost import CostReport
from autocompress.evaluate import EvalResult
from autocompress.space import SearchSpace


def human(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}{unit}"
    return f"{value:.4g}{unit}"


def layer_table(space: SearchSpace, title: str = "Layers") -> Table:
    """What each Conv/Linear layer is, what it costs and which methods apply (and why not)."""
    table = Table(title=title, show_lines=False)
    for column in ("layer", "type", "shape", "params", "FLOPs", "BitOps", "methods", "channel group", "left alone because"):
        table.add_column(column, justify="right" if column in ("params", "FLOPs", "BitOps") else "left")
    for row in space.describe():
        table.add_row(
            str(row["layer"]),
            str(row["type"]),
            str(row["shape"]),
            human(row["params"]),
            human(row["flops"]),
            human(row["bitops"]),
            ", ".join(row["methods"]) or "-",
            str(row["group"] or "-"),
            str(row["why_not"] or ""),
        )
    return table


def cost_comparison(original: CostReport, compressed: CostReport, title: str = "Cost per sample") -> Table:
    table = Table(title=title)
    for column in ("", "original", "compressed", "ratio"):
        table.add_column(column, justify="right")
    ratios = compressed.ratio_to(original)
    for key, value in original.as_dict().items():
        table.add_row(key, human(value), human(compressed.as_dict()[key]), f"{ratios[key]:.3f}")
    return table


def results_table(rows: Iterable[tuple[str, EvalResult, dict[str, str]]], extra: Sequence[str] = (), title: str = "Results") -> Table:
    """One row per (label, result, extra columns)."""
    table = Table(title=title)
    for column in ("policy", "FLOPs %", "params", "FLOPs", "BitOps", "before FT", "after FT", *extra):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for label, result, more in rows:
        ratios = result.ratios
        after = "-" if result.metric_after_finetune is None else f"{result.metric_after_finetune:.2f}"
        table.add_row(
            label,
            f"{100 * ratios['flops']:.1f}",
            human(result.cost.params),
            human(result.cost.flops),
            human(result.cost.bitops),
            f"{result.metric_before_finetune:.2f}",
            after,
            *(more.get(c, "") for c in extra),
        )
    return table
