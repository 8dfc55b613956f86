"""Commands on a study: ``search``, ``worker``, ``front``, ``export``, ``confirm``, ``optimize``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from autocompress.cli import common
from autocompress.cli.common import (
    StorageArg,
    StudyOption,
    app,
    fail,
    front_table,
    open_study,
    stored_config,
)

if TYPE_CHECKING:
    from autocompress.hardware.policy_latency import PolicyLatency


@app.command("search")
def search_cmd(
    config: Annotated[Path, typer.Argument(help="search configuration (YAML)")],
    workers: Annotated[int | None, typer.Option(help="evaluate this many candidates at once on this machine")] = None,
) -> None:
    """Search compression policies (resumes a killed search without re-evaluating finished candidates)."""
    from autocompress.search.config import ConfigError, load_config
    from autocompress.search.runner import search_from_config

    try:
        parsed = load_config(config)
        study = search_from_config(parsed, workers=workers, console=common.console)
    except ConfigError as error:
        fail(str(error))
    records = study.records()
    failed = sum(r.state == "failed" for r in records)
    front = study.pareto_front()
    common.console.print(front_table(study, front, f"Pareto front ({', '.join(o.name for o in study.objectives)})"))
    common.console.print(f"{len(records)} candidates ({failed} failed); hypervolume {study.hypervolume():.6g} "
                  f"(reference {study.default_reference()}); storage {parsed.storage}, study {parsed.study}")
    if parsed.constraints:
        try:
            best = study.best(parsed.constraints)
            common.console.print(f"best meeting {', '.join(parsed.constraints)}: #{best.number}")
        except LookupError as error:
            common.console.print(f"[yellow]{error}[/yellow] (the study and its front are saved)")


@app.command()
def worker(
    storage: Annotated[str, typer.Option(help="the shared study's storage URL")],
    study: Annotated[str, typer.Option(help="study name")],
    idle_timeout: Annotated[float, typer.Option(help="stop after this many seconds with nothing to do")] = 60.0,
) -> None:
    """Evaluate candidates queued in a shared study (run it on other machines)."""
    from autocompress.search.config import ConfigError
    from autocompress.search.worker import run_worker

    try:
        done = run_worker(storage, study, idle_timeout=idle_timeout, console=common.console)
    except (ConfigError, ValueError) as error:
        fail(str(error))
    common.console.print(f"evaluated {done} candidates")


@app.command()
def front(
    storage: StorageArg,
    study: StudyOption = None,
    objectives: Annotated[str | None, typer.Option(help="comma-separated, e.g. accuracy,bitops (default: the study's)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the Pareto plot (PNG) here")] = None,
    best: Annotated[str | None, typer.Option(help='constraints, e.g. "accuracy_drop<=1.0": print the best candidate meeting them')] = None,
) -> None:
    """The Pareto front as a table; optionally its plot and the best candidate meeting a constraint."""
    opened = open_study(storage, study)
    names = objectives.split(",") if objectives else [o.name for o in opened.objectives]
    try:
        front_records = opened.pareto_front(names)
    except ValueError as error:
        fail(str(error))
    common.console.print(front_table(opened, front_records, f"Pareto front ({', '.join(names)}), {len(opened.completed())} candidates"))
    if plot is not None:
        from autocompress.search.objectives import Objective
        from autocompress.search.pareto import non_dominated
        from autocompress.search.plot import plot_front

        if len(names) != 2:
            fail("--plot needs exactly two objectives")
        chosen = [Objective.parse(n) for n in names]
        metric = next((o for o in chosen if o.direction == "maximize"), chosen[0])
        cost = next(o for o in chosen if o is not metric)
        cost_key = f"{cost.key}_ratio" if f"{cost.key}_ratio" in opened.completed()[0].values else cost.key
        records = opened.completed()
        points = np.array([[r.values[cost_key], r.values[metric.key]] for r in records])
        mask = non_dominated(points, ["minimize", metric.direction])
        original = opened.meta.get("original", {})
        path = plot_front(points, mask, x_label=cost_key, y_label=metric.key, path=plot,
                          original=(original.get(cost_key, 1.0), original.get(metric.key)) if original else None,
                          title=f"{len(records)} candidates, front highlighted",
                          log_x=bool(points[:, 0].min() > 0 and points[:, 0].max() / points[:, 0].min() > 100))
        common.console.print(f"wrote {path}")
    if best:
        try:
            chosen_record = opened.best([c.strip() for c in best.split(",")])
        except (LookupError, ValueError) as error:
            fail(str(error))
        common.console.print(front_table(opened, [chosen_record], f"best meeting {best}"))


@app.command("export")
def export_cmd(
    storage: StorageArg,
    trial: Annotated[int, typer.Option(help="the candidate's number (#)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    study: StudyOption = None,
    finetune_epochs: Annotated[float | None, typer.Option(help="fine-tune budget (default: the search's)")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="also write model.int8.onnx (static int8, calibrated on training inputs)")] = False,
    calibration_batches: Annotated[int, typer.Option(help="with --int8: training batches (of the task's batch size) to calibrate on")] = 8,
) -> None:
    """Rebuild a candidate, fine-tune it, save it (policy + state_dict) and export it to ONNX (and int8)."""
    from autocompress.evaluate import Evaluator
    from autocompress.export import ExportError, export, onnx_metric
    from autocompress.report import human
    from autocompress.saving import save
    from autocompress.transforms.quantize import QuantWrapper

    if calibration_batches < 1:
        fail(f"--calibration-batches must be >= 1, got {calibration_batches}")
    opened = open_study(storage, study)
    try:
        record = opened.record(trial)
    except KeyError as error:
        fail(str(error))
    config, spec = stored_config(opened)
    task = spec.task
    try:
        model, space = spec.target(record.policy)  # an APQ candidate: its sub-network of the supernet
    except ValueError as error:
        fail(f"#{trial}: {error}")
    settings = config.evaluator_kwargs()
    if finetune_epochs is not None:
        settings["finetune_epochs"] = finetune_epochs
    result = Evaluator(task, progress=True, **settings).evaluate(model, record.policy, space=space)
    save(result, out)
    split = "test" if task.test is not None else "val"
    example = task.example_input(8)
    if record.policy.activations == "dynamic":  # one file, each layer at the policy's precision (int8 or fp32)
        quantized = any(isinstance(m, QuantWrapper) for m in result.model.modules())  # else every layer stays fp32
        try:
            made = export(result.model, out, int8="dynamic" if quantized else False, example=example,
                          check_inputs=task.split(split)[0][:64])
        except ExportError as error:
            fail(f"dynamic int8 export: {error}")
        layers = len(made.plan.int8) if made.plan is not None else 0
        common.console.print(f"wrote {made.path}: {layers} layers in int8 (ONNX Runtime dynamic), the rest fp32; "
                             f"{task.metric_name} on {split} (ONNX Runtime): {onnx_metric(made.path, task, split):.4f}")
        return
    calibration = task.split("train")[0][: calibration_batches * task.batch_size] if int8 else None
    try:
        made = export(result.model, out, int8="static" if int8 else False, example=example, calibration=calibration)
    except ExportError as error:
        fail(f"{'int8 ' if int8 else ''}export: {error}")
    common.console.print(f"#{trial}: {result.metric_name} {result.metric:.2f} (original {result.metric_original:.2f}); "
                  f"FLOPs {100 * result.ratios['flops']:.1f} %; wrote {out}/ (policy.json, state_dict.pt, meta.json, model.onnx)")
    if int8:
        fp32, quantized = made.variants["fp32"], made.variants["int8-static"]
        fp32_metric, int8_metric = onnx_metric(made.paths["fp32"], task, split), onnx_metric(made.path, task, split)
        common.console.print(f"int8: model.int8.onnx {human(quantized.bytes, 'B')} vs model.onnx {human(fp32.bytes, 'B')} "
                      f"({fp32.bytes / quantized.bytes:.1f}x smaller); {task.metric_name} on {split} (ONNX Runtime): "
                      f"fp32 {fp32_metric:.2f}, int8 {int8_metric:.2f}; calibrated on {len(calibration)} training samples")


@app.command("confirm")
def confirm_cmd(
    storage: StorageArg,
    best: Annotated[str, typer.Option(help='constraints the candidates must meet, e.g. "macs_ratio<=0.05"')],
    top: Annotated[int, typer.Option(help="how many of the best candidates (by the search's metric) to confirm")] = 3,
    finetune_epochs: Annotated[float, typer.Option(help="the confirmation's fine-tune (the final model's)")] = 5.0,
    study: StudyOption = None,
    workers: Annotated[int, typer.Option(help="evaluation processes")] = 1,
) -> None:
    """Fine-tune the TOP best candidates meeting --best for longer and print the winner (successive halving's last rung)."""
    from autocompress.search.confirm import confirm

    opened = open_study(storage, study)
    config, spec = stored_config(opened)
    task = spec.task
    settings = {k: v for k, v in config.evaluator_kwargs().items() if k not in ("finetune_epochs", "finetune_steps", "seed")}
    constraints = [c.strip() for c in best.split(",")]
    try:
        confirmed = confirm(opened, spec.model, task, spec.space, constraints=constraints, top=top,
                            finetune_epochs=finetune_epochs, evaluator=settings, seed=config.seed, workers=workers,
                            console=common.console, elastic=config.load_elastic())
        winner = confirmed.best(constraints, objective="accuracy")
    except (LookupError, ValueError) as error:
        fail(str(error))
    common.console.print(front_table(confirmed, confirmed.completed(), f"confirmed with {finetune_epochs:g} epochs ({confirmed.optuna.study_name})"))
    common.console.print(f"best meeting {best}: #{winner.number} ({task.metric_name} {winner.values['metric']:.2f}); "
                  f"export it with: autocompress export {storage} --study {confirmed.optuna.study_name!r} --trial {winner.number} --out best/")



@app.command()
def optimize(
    storage: StorageArg,
    budget: Annotated[str, typer.Option(help='a cost budget: "flops_ratio<=0.1" (a ratio of the original), "bitops<=2e6" '
                                        '(absolute), "latency_ratio<=0.5" or "latency_ms<=2"')],
    study: StudyOption = None,
    kind: Annotated[str, typer.Option(help="predictor: auto, gp, mlp, ensemble, linear")] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the policy (JSON) here")] = None,
    target: Annotated[str | None, typer.Option(help="latency target for --budget latency=..: 'ort-cpu:threads=1,batch=32' "
                                               "(default: the study's latency settings, else ort-cpu)")] = None,
) -> None:
    """A policy for a new budget from a study's labelled policies: fit a predictor, optimize on it (no training).

    Latency budgets (``--budget latency_ms<=2``, or ``latency_ratio<=0.5`` for half the original's) are
    estimated from the per-layer lookup table of the target (timed once, then cached).
    """
    from autocompress.budget import Constraint
    from autocompress.policy import Policy
    from autocompress.search.ladders import cost_value
    from autocompress.search.optimize import optimize_policy
    from autocompress.search.strategies.seernet import fit_predictor

    opened = open_study(storage, study)
    _config, spec = stored_config(opened)
    task, space = spec.task, spec.space
    try:
        bound = Constraint.parse(budget)
    except ValueError as error:
        fail(str(error))
    if bound.cost is None or not bound.upper:
        fail(f"--budget {budget!r}: bound a cost from above, e.g. flops_ratio<=0.1, bitops<=2e6 or latency_ratio<=0.5")
    latency_model = _latency_model(space, spec.model, task, opened, target) if bound.cost == "latency" else None
    bound = str(bound)
    records = [r for r in opened.completed() if "metric" in r.values]
    if len(records) < 2:
        fail(f"the study has {len(records)} completed candidates; the predictor needs at least 2")
    start = time.perf_counter()
    try:
        original = (opened.meta.get("original") or {}).get("metric")
        predictor = fit_predictor(space, records, original, kind=kind, who="optimize")
        fitted = time.perf_counter() - start
        result = optimize_policy(predictor, space, bound, latency_model=latency_model)
    except ValueError as error:
        fail(str(error))
    base = cost_value(space, Policy(), result.key, latency_model)
    common.console.print(f"predictor {predictor.kind_} fitted on {len(records)} labelled policies in {fitted:.2f} s; "
                  f"optimized for {bound} in {result.seconds:.2f} s")
    common.console.print(f"predicted {task.metric_name} {result.predicted:.2f}; {result.key} {result.cost:,.6g} "
                  f"= {result.cost / base:.4g} of the original (budget {result.budget:,.6g})")
    common.console.print(result.policy.to_json())
    if out is not None:
        result.policy.save(out)
        common.console.print(f"wrote {out}; measure it with: autocompress apply --policy {out} ...")


def _latency_model(space, model, task, opened, target: str | None) -> PolicyLatency:  # noqa: ANN001
    """The lookup-table latency model of ``model`` in ``space`` on the target (option, study settings, ort-cpu)."""
    from autocompress.hardware.policy_latency import latency_model_for
    from autocompress.hardware.targets import parse_target

    settings = dict((opened.meta.get("config") or {}).get("latency") or {})
    try:
        if target is not None:
            chosen = parse_target(target)
            settings.update(runtime=chosen.runtime, threads=chosen.threads, batch=chosen.batch, repeats=chosen.repeats)
        latency_model = latency_model_for(space, model, task, settings)
    except ValueError as error:
        fail(str(error))
    common.console.print(f"latency model: lookup table on {latency_model.table.target.name} (layers timed once, then cached)")
    return latency_model
