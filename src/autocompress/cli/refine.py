"""ODF2NNA's command: ``refine`` (fixed or automatic epsilon, or a sweep stored as a study)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from autocompress.cli import common
from autocompress.cli.common import (
    ModelOption,
    SeedOption,
    TaskOption,
    ZooOption,
    app,
    fail,
    model_source,
)


# ---------------------------------------------------------------- refine (ODF2NNA)
def _parse_epsilon(text: str) -> float | str:
    """``--epsilon``: 'auto' or a finite number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        fail(f"--epsilon must be a number >= 0 or 'auto', got {text!r}")
    return value


def _units_table(report, title: str):  # noqa: ANN001, ANN202 - a RefineReport -> rich Table
    from rich.table import Table

    table = Table(title=title)
    for column in ("layer", "units", "kept", "removed", "score min", "score median", "score max", "best removed"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in report.layers:
        best = "-" if row.removed_score_max is None else f"{row.removed_score_max:.4f}"
        table.add_row(row.layer, str(row.units), str(row.kept), str(row.removed), f"{row.score_min:.4f}",
                      f"{row.score_median:.4f}", f"{row.score_max:.4f}", best)
    return table


def _refine_sweep(entry, storage: str, name: str, epsilon: float | str, tolerance: float | None, retrain_epochs: float,  # noqa: ANN001
                  statistic: str, seed: int) -> float | str:
    """``refine --storage``: the whole epsilon sweep into a study, its front printed; the epsilon to refine at."""
    from rich.table import Table

    from autocompress.search.refine_gate import DEFAULT_CONFIDENCE, choose_epsilon, quality_gate
    from autocompress.search.refine_study import stored_points, sweep_study

    try:
        opened = sweep_study(entry.model, entry.task, storage, name, statistic=statistic, retrain_epochs=retrain_epochs,
                             seed=seed, progress=True)
    except ValueError as error:
        fail(str(error))
    points = stored_points(opened)
    table = Table(title=f"epsilon sweep: {len(points)} refined models (validation split), Pareto front (accuracy, params) marked")
    for column in ("epsilon", "hidden", "params", "params %", "before retrain", "after retrain", "loss gap", "front"):
        table.add_column(column, justify="right")
    original = opened.meta["original"]["params"]
    for p in points:
        table.add_row(f"{p.epsilon:g}", "-".join(map(str, p.hidden)), f"{p.params:,}", f"{100 * p.params / original:.1f}",
                      f"{p.metric_before_retrain:.3f}", f"{p.metric:.3f}", f"{p.loss_gap:+.4f} ± {p.loss_gap_se:.4f}",
                      "✓" if p.on_front else "")
    common.console.print(table)
    common.console.print(f"storage {storage}, study {name}: `autocompress front {storage} --study {name} --plot front.png`")
    if epsilon != "auto":
        return epsilon
    gate = quality_gate(entry.model, entry.task, tolerance, "auto", DEFAULT_CONFIDENCE)
    chosen = choose_epsilon(points, gate.metric, gate.tolerance, original_loss=gate.loss,
                            loss_tolerance=gate.loss_tolerance, confidence=gate.confidence)
    if chosen is None:
        common.console.print(f"[yellow]no epsilon kept the validation metric within {gate.tolerance:g}: nothing is removed[/yellow]")
        return 0.0
    common.console.print(f"chosen from the sweep: epsilon {chosen.epsilon:g} (the largest within tolerance {gate.tolerance:g})")
    return chosen.epsilon


@app.command()
def refine(
    zoo: ZooOption = None,
    model_ref: ModelOption = None,
    task_ref: TaskOption = None,
    epsilon: Annotated[str, typer.Option(help="remove hidden units scoring below this (a number >= 0; 0.45 met the paper's goal in benchmarks/odf2nna.py), or 'auto': the largest epsilon whose retrained model stays within --tolerance on the validation split")] = "auto",
    tolerance: Annotated[float | None, typer.Option(help="with --epsilon auto: allowed validation-metric drop (default: 0.5 accuracy points; other metrics 1 % of the original's)")] = None,
    retrain_epochs: Annotated[float, typer.Option(help="retraining epochs of the refined model (0 = none)")] = 5.0,
    statistic: Annotated[str, typer.Option(help="unit usefulness statistic: std, std_mean, std_max, contribution, contribution_max")] = "contribution_max",
    out: Annotated[Path | None, typer.Option(help="write the refined model's state_dict.pt and report.json here")] = None,
    storage: Annotated[str | None, typer.Option(help="sweep every epsilon of the grid into this study storage (SQLite file or RDB URL; resumes), print its Pareto front; --epsilon auto then chooses from it")] = None,
    study: Annotated[str, typer.Option("--study", help="with --storage: the study's name")] = "refine",
    seed: SeedOption = 0,
) -> None:
    """ODF2NNA on a zoo MLP: keep the useful hidden units, rebuild a smaller MLP from their weights, retrain."""
    import torch
    from rich.table import Table

    from autocompress.finetune import evaluate_metric
    from autocompress.search.refine import refine_dense
    from autocompress.transforms.dense_chain import DenseStructureError, dense_chain
    from autocompress.transforms.units import STATISTICS
    from autocompress.zoo import list_zoo

    chosen_epsilon = _parse_epsilon(epsilon)
    if tolerance is not None and not tolerance >= 0:
        fail(f"--tolerance must be >= 0 (in the metric's units), got {tolerance}")
    if not retrain_epochs >= 0:
        fail(f"--retrain-epochs must be >= 0, got {retrain_epochs}")
    if statistic not in STATISTICS:
        fail(f"unknown --statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    mlps = [name for name in list_zoo() if name.endswith("-mlp")]
    structure = model_source(zoo, model_ref, task_ref, seed, pretrained=False)
    try:
        dense_chain(structure.model, structure.example_input)
    except DenseStructureError as error:
        fail(f"refine needs a dense network (an MLP), and {structure.name!r} is not one: {error}. Zoo MLPs: {', '.join(mlps)}")
    entry = model_source(zoo, model_ref, task_ref, seed, pretrained=True) if zoo is not None else structure
    zoo = entry.name
    if storage is not None:
        chosen_epsilon = _refine_sweep(entry, storage, study, chosen_epsilon, tolerance, retrain_epochs, statistic, seed)
    refined, report = refine_dense(entry.model, entry.task, chosen_epsilon, tolerance=tolerance,
                                   retrain_epochs=retrain_epochs, statistic=statistic, seed=seed)
    test = {"original": evaluate_metric(entry.model, entry.task, "test"), "refined": evaluate_metric(refined, entry.task, "test")}
    common.console.print(_units_table(report, f"{zoo}: hidden units ({statistic}, epsilon {report.epsilon:g}, {report.samples} training samples)"))
    if report.sweep:
        sweep = Table(title=f"epsilon sweep (from the top; tolerance {report.tolerance:g})")
        for column in ("epsilon", "params", "hidden", "val before retrain", "val after retrain"):
            sweep.add_column(column, justify="right")
        for point in report.sweep:
            sweep.add_row(f"{point.epsilon:g}", f"{point.params:,}", "-".join(map(str, point.hidden)),
                          f"{point.metric_before_retrain:.3f}", f"{point.metric:.3f}")
        common.console.print(sweep)
    summary = Table(title="before / after")
    for column in ("", "original", "refined"):
        summary.add_column(column, justify="right")
    summary.add_row("params", f"{report.params_before:,}", f"{report.params_after:,} ({100 * report.params_removed:.1f} % removed)")
    retrained = "-" if report.metric_retrained is None else f"{report.metric_retrained:.3f}"
    summary.add_row(f"val {report.metric_name}", f"{report.metric_original:.3f}",
                    f"{report.metric_before_retrain:.3f} before retrain, {retrained} after")
    summary.add_row(f"test {report.metric_name}", f"{test['original']:.3f}", f"{test['refined']:.3f}")
    common.console.print(summary)
    if report.met_tolerance is False:
        common.console.print(f"[yellow]no epsilon kept the validation metric within {report.tolerance:g}: nothing was removed[/yellow]")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in refined.state_dict().items()}, out / "state_dict.pt")
        saved = {"zoo": zoo, "seed": seed, "model": type(refined).__name__, "hidden": report.hidden,
                 "test": test, "report": report.model_dump()}
        (out / "report.json").write_text(json.dumps(saved, indent=2))
        common.console.print(f"wrote {out}/ (state_dict.pt, report.json); rebuild: {type(refined).__name__} with hidden={report.hidden}")
