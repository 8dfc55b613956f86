"""Command-line interface: ``autocompress inspect | policy | apply | demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Automatic compression of trained PyTorch models.")
console = Console()

ZooOption = Annotated[str, typer.Option("--zoo", help="a bundled model: see `autocompress zoo`")]
SeedOption = Annotated[int, typer.Option(help="seed of the bundled model's data and training")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _zoo(name: str, seed: int, pretrained: bool):
    from autocompress.zoo import list_zoo, load_zoo

    if name not in list_zoo():
        _fail(f"unknown zoo model {name!r}; allowed: {', '.join(list_zoo())}")
    return load_zoo(name, pretrained=pretrained, seed=seed, progress=True)


@app.command("zoo")
def zoo_cmd() -> None:
    """List the bundled models."""
    from autocompress.zoo import list_zoo

    for name in list_zoo():
        console.print(name)


@app.command()
def inspect(zoo: ZooOption, seed: SeedOption = 0) -> None:
    """Layer table: type, shape, params, FLOPs, BitOps, which methods apply, and why a layer is left alone."""
    from autocompress.policy import Policy
    from autocompress.report import human, layer_table
    from autocompress.space import SearchSpace

    entry = _zoo(zoo, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    console.print(layer_table(space, title=f"{zoo}: layers (per-sample costs)"))
    total = space.cost(Policy())
    console.print(f"total: params {human(total.params)}, FLOPs {human(total.flops)}, BitOps {human(total.bitops)}, bytes {human(total.bytes, 'B')}")
    console.print(f"{len(space.groups)} channel groups, {len(space.genes)} genes")


@app.command()
def policy(
    zoo: ZooOption,
    out: Annotated[Path, typer.Option(help="where to write the policy JSON")] = Path("policy.json"),
    prune: float = 0.0,
    rank: float = 1.0,
    weight_bits: int = 32,
    act_bits: int = 32,
    seed: SeedOption = 0,
) -> None:
    """Write a uniform policy for a zoo model (a starting point to edit by hand)."""
    from autocompress.policy import Policy
    from autocompress.space import SearchSpace

    entry = _zoo(zoo, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        made = Policy.uniform(space, prune=prune, rank=rank, weight_bits=weight_bits, act_bits=act_bits)
    except ValueError as error:
        _fail(str(error))
    made.save(out)
    console.print(f"wrote {out} ({len(made.layers)} layers)")


@app.command()
def apply(
    zoo: ZooOption,
    policy: Annotated[Path, typer.Option(help="policy JSON file")],
    out: Annotated[Path, typer.Option(help="output directory")],
    finetune_epochs: Annotated[float, typer.Option(help="fine-tune budget after compression (0 = none)")] = 1.0,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for the latency measurement")] = 1,
    seed: SeedOption = 0,
) -> None:
    """Compress a zoo model by a policy; write the model (policy + state_dict), its ONNX file and a summary."""
    from autocompress.evaluate import Evaluator
    from autocompress.export import export_onnx
    from autocompress.hardware.latency import compare_latency
    from autocompress.policy import Policy
    from autocompress.report import cost_comparison
    from autocompress.saving import save
    from autocompress.space import PolicyError, SearchSpace

    if not policy.exists():
        _fail(f"policy file {policy} does not exist")
    try:
        chosen = Policy.load(policy)
    except (ValueError, json.JSONDecodeError) as error:
        _fail(f"{policy} is not a valid policy: {error}")
    entry = _zoo(zoo, seed, pretrained=True)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        chosen = space.validate(chosen)
    except PolicyError as error:
        _fail(str(error))
    evaluator = Evaluator(entry.task, finetune_epochs=finetune_epochs, split="test", seed=seed, progress=True)
    result = evaluator.evaluate(entry.model, chosen, space=space)
    save(result, out)
    example = entry.task.example_input(32)
    small_path = export_onnx(result.model, out / "model.onnx", example)
    original_path = export_onnx(entry.model, out / "original.onnx", example)
    latency = compare_latency({"original": original_path, "compressed": small_path}, example, threads=threads)
    summary = {
        **result.to_dict(),
        "ort_latency_ms": {k: v.median_ms for k, v in latency.items()},
        "ort_threads": threads,
        "latency_batch": 32,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(cost_comparison(result.original_cost, result.cost))
    name = result.metric_name
    after = "-" if result.metric_after_finetune is None else f"{result.metric_after_finetune:.2f}"
    console.print(f"{name}: original {result.metric_original:.2f}, compressed {result.metric_before_finetune:.2f} before fine-tune, {after} after")
    o, c = latency["original"].median_ms, latency["compressed"].median_ms
    console.print(f"ONNX Runtime, batch 32, {threads} thread: original {o:.3f} ms, compressed {c:.3f} ms ({o / c:.2f}× faster)")
    console.print(f"wrote {out}/ (policy.json, state_dict.pt, meta.json, model.onnx, summary.json)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    finetune_epochs: float = 1.0,
    threads: int = 1,
    seed: SeedOption = 0,
) -> None:
    """End-to-end on MNIST-1D: uniform prune / low-rank / mixed 4-bit policies at 50 %, 25 %, 10 % FLOPs."""
    from autocompress.demo import run_demo

    run_demo(out, finetune_epochs=finetune_epochs, seed=seed, threads=threads, console=console)


# ---------------------------------------------------------------- search
StorageArg = Annotated[str, typer.Argument(help="the study's storage: a SQLite file or an RDB URL")]
StudyOption = Annotated[str | None, typer.Option("--study", help="study name (default: the only one in the storage)")]


def _open_study(storage: str, name: str | None):
    import optuna

    from autocompress.search.study import Study, open_storage

    if "://" not in storage and not Path(storage).exists():
        _fail(f"{storage} does not exist")
    names = optuna.get_all_study_names(open_storage(storage))
    if name is None:
        if len(names) != 1:
            _fail(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}): choose one with --study")
        name = names[0]
    try:
        return Study.open(storage, name, create=False)
    except ValueError as error:
        _fail(str(error))


def _front_table(study, records, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in ("#", "strategy", "metric", "drop", "FLOPs %", "params %", "BitOps %", "bytes %", "latency ms", "eval s"):
        table.add_column(column, justify="right")
    for r in records:
        v = r.values
        latency = f"{v['latency_ms']:.3f}" if "latency_ms" in v else "-"
        table.add_row(
            str(r.number), str(r.tags.get("strategy", "")), f"{v['metric']:.2f}", f"{v['accuracy_drop']:.2f}",
            f"{100 * v['flops_ratio']:.1f}", f"{100 * v['params_ratio']:.1f}", f"{100 * v['bitops_ratio']:.2f}",
            f"{100 * v['bytes_ratio']:.1f}", latency, f"{r.seconds:.1f}",
        )
    return table


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
        study = search_from_config(parsed, workers=workers, console=console)
    except ConfigError as error:
        _fail(str(error))
    records = study.records()
    failed = sum(r.state == "failed" for r in records)
    front = study.pareto_front()
    console.print(_front_table(study, front, f"Pareto front ({', '.join(o.name for o in study.objectives)})"))
    console.print(f"{len(records)} candidates ({failed} failed); hypervolume {study.hypervolume():.6g} "
                  f"(reference {study.default_reference()}); storage {parsed.storage}, study {parsed.study}")
    if parsed.constraints:
        try:
            best = study.best(parsed.constraints)
            console.print(f"best meeting {', '.join(parsed.constraints)}: #{best.number}")
        except LookupError as error:
            console.print(f"[yellow]{error}[/yellow] (the study and its front are saved)")


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
        done = run_worker(storage, study, idle_timeout=idle_timeout, console=console)
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    console.print(f"evaluated {done} candidates")


@app.command()
def front(
    storage: StorageArg,
    study: StudyOption = None,
    objectives: Annotated[str | None, typer.Option(help="comma-separated, e.g. accuracy,bitops (default: the study's)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the Pareto plot (PNG) here")] = None,
    best: Annotated[str | None, typer.Option(help='constraints, e.g. "accuracy_drop<=1.0": print the best candidate meeting them')] = None,
) -> None:
    """The Pareto front as a table; optionally its plot and the best candidate meeting a constraint."""
    opened = _open_study(storage, study)
    names = objectives.split(",") if objectives else [o.name for o in opened.objectives]
    try:
        front_records = opened.pareto_front(names)
    except ValueError as error:
        _fail(str(error))
    console.print(_front_table(opened, front_records, f"Pareto front ({', '.join(names)}), {len(opened.completed())} candidates"))
    if plot is not None:
        from autocompress.search.objectives import Objective
        from autocompress.search.pareto import non_dominated
        from autocompress.search.plot import plot_front

        if len(names) != 2:
            _fail("--plot needs exactly two objectives")
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
        console.print(f"wrote {path}")
    if best:
        try:
            chosen_record = opened.best([c.strip() for c in best.split(",")])
        except (LookupError, ValueError) as error:
            _fail(str(error))
        console.print(_front_table(opened, [chosen_record], f"best meeting {best}"))


@app.command("export")
def export_cmd(
    storage: StorageArg,
    trial: Annotated[int, typer.Option(help="the candidate's number (#)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    study: StudyOption = None,
    finetune_epochs: Annotated[float | None, typer.Option(help="fine-tune budget (default: the search's)")] = None,
) -> None:
    """Rebuild a candidate, fine-tune it, save it (policy + state_dict) and export it to ONNX."""
    from autocompress.evaluate import Evaluator
    from autocompress.export import export_onnx
    from autocompress.saving import save
    from autocompress.search.config import load_config

    opened = _open_study(storage, study)
    try:
        record = opened.record(trial)
    except KeyError as error:
        _fail(str(error))
    stored = opened.meta.get("config")
    if not stored:
        _fail("this study stores no configuration (it was made from Python): rebuild with autocompress.apply_policy")
    config = load_config(stored)
    model, task, space = config.build()
    settings = config.evaluator_kwargs()
    if finetune_epochs is not None:
        settings["finetune_epochs"] = finetune_epochs
    result = Evaluator(task, progress=True, **settings).evaluate(model, record.policy, space=space)
    save(result, out)
    export_onnx(result.model, out / "model.onnx", task.example_input(8))
    console.print(f"#{trial}: {result.metric_name} {result.metric:.2f} (original {result.metric_original:.2f}); "
                  f"FLOPs {100 * result.ratios['flops']:.1f} %; wrote {out}/ (policy.json, state_dict.pt, meta.json, model.onnx)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
