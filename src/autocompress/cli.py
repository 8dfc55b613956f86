"""Command-line interface: ``autocompress compress | inspect | profile | policy | apply | demo | search | ...``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Automatic compression of trained PyTorch models.")
console = Console()

ZooOption = Annotated[str | None, typer.Option("--zoo", help="a bundled model: see `autocompress zoo` (or --model and --task)")]
ModelOption = Annotated[str | None, typer.Option("--model", help="your model: 'module:function' returning the trained nn.Module "
                                                 "(the current directory is importable)")]
TaskOption = Annotated[str | None, typer.Option("--task", help="your data: 'module:function' returning an autocompress.Task "
                                                "(e.g. Task.from_loaders(train, val, test))")]
SeedOption = Annotated[int, typer.Option(help="seed of the bundled model's data and training")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _zoo(name: str, seed: int, pretrained: bool):
    from autocompress.zoo import list_zoo, load_zoo

    if name not in list_zoo():
        _fail(f"unknown zoo model {name!r}; allowed: {', '.join(list_zoo())}")
    return load_zoo(name, pretrained=pretrained, seed=seed, progress=True)


class _Source:
    """A model, its task and an example input: a bundled one (--zoo) or the user's (--model/--task)."""

    def __init__(self, name: str, model, task, example) -> None:  # noqa: ANN001
        self.name, self.model, self.task, self.example_input = name, model, task, example


def _source(zoo: str | None, model: str | None, task: str | None, seed: int, pretrained: bool) -> _Source:
    if zoo is not None:
        if model or task:
            _fail("give either --zoo or --model and --task, not both")
        entry = _zoo(zoo, seed, pretrained)
        return _Source(zoo, entry.model, entry.task, entry.example_input)
    if not model or not task:
        _fail("give --zoo NAME (see `autocompress zoo`) or both --model module:function and --task module:function")
    from autocompress.calls import fit_inputs
    from autocompress.search.config import ConfigError, load_user_objects

    try:
        made, data = load_user_objects(model, task)
    except ConfigError as error:
        _fail(str(error))
    return _Source(model, made, data, fit_inputs(made, data.example_input(1)))


@app.command("zoo")
def zoo_cmd() -> None:
    """List the bundled models."""
    from autocompress.zoo import list_zoo

    for name in list_zoo():
        console.print(name)


@app.command()
def inspect(zoo: ZooOption = None, model: ModelOption = None, task: TaskOption = None, seed: SeedOption = 0) -> None:
    """Layer table: type, shape, params, FLOPs, BitOps, which methods apply, and why a layer is left alone."""
    from autocompress.policy import Policy
    from autocompress.report import human, layer_table
    from autocompress.space import SearchSpace

    entry = _source(zoo, model, task, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    console.print(layer_table(space, title=f"{entry.name}: layers (per-sample costs)"))
    total = space.cost(Policy())
    console.print(f"total: params {human(total.params)}, FLOPs {human(total.flops)}, BitOps {human(total.bitops)}, bytes {human(total.bytes, 'B')}")
    console.print(f"{len(space.groups)} channel groups, {len(space.genes)} genes")


@app.command()
def profile(
    zoo: ZooOption = None,
    model_ref: ModelOption = None,
    task_ref: TaskOption = None,
    target: Annotated[str, typer.Option(help="ort-cpu, torch-cpu or torch-cuda, with options: 'ort-cpu:threads=2,batch=8'")] = "ort-cpu",
    policy_file: Annotated[Path | None, typer.Option("--policy", help="profile the model compressed by this policy")] = None,
    seed: SeedOption = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="time every layer again (the table is still written)")] = False,
) -> None:
    """Per-layer and whole-model latency on a target, from the cached per-layer lookup table."""
    from rich.table import Table

    from autocompress.apply import apply_policy
    from autocompress.hardware.lut import LatencyTable
    from autocompress.hardware.targets import measure, parse_target
    from autocompress.policy import Policy
    from autocompress.space import SearchSpace

    try:
        parsed = parse_target(target)
    except ValueError as error:
        _fail(str(error))
    entry = _source(zoo, model_ref, task_ref, seed, pretrained=False)
    model, original = entry.model, None
    if policy_file is not None:
        space = SearchSpace.from_model(entry.model, entry.example_input)
        model, original = apply_policy(entry.model, Policy.load(policy_file), space=space), entry.model
    table = LatencyTable.open(parsed)
    if no_cache:
        table.entries, table.overheads = {}, {}
    estimate = table.estimate(model, entry.example_input, original=original)
    whole = measure(model, entry.example_input, parsed)
    rows = Table(title=f"{entry.name} on {parsed.name} (per batch of {parsed.batch}; table {table.path})")
    for column in ("layer", "configuration", "ms", "share"):
        rows.add_column(column, justify="right" if column in ("ms", "share") else "left")
    for name, config, ms in estimate.layers:
        rows.add_row(name, config.describe(), f"{ms:.4f}", f"{100 * ms / max(whole.median_ms, 1e-12):.1f} %")
    console.print(rows)
    console.print(f"layers {estimate.layers_ms:.4f} ms + overhead {estimate.overhead_ms:.4f} ms "
                  f"(calibrated on the {'original' if original is not None else 'model itself'}) "
                  f"= estimate {estimate.total_ms:.4f} ms")
    console.print(f"measured whole model: median {whole.median_ms:.4f} ms (p10 {whole.p10_ms:.4f}, p90 {whole.p90_ms:.4f}, "
                  f"{whole.repeats} repeats); estimate error {100 * (estimate.total_ms / whole.median_ms - 1):+.1f} %; "
                  f"{table.measured} layer configurations timed now")


@app.command()
def policy(
    zoo: ZooOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
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

    entry = _source(zoo, model, task, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        made = Policy.uniform(space, prune=prune, rank=rank, weight_bits=weight_bits, act_bits=act_bits)
    except ValueError as error:
        _fail(str(error))
    made.save(out)
    console.print(f"wrote {out} ({len(made.layers)} layers)")


@app.command()
def apply(
    policy: Annotated[Path, typer.Option(help="policy JSON file")],
    out: Annotated[Path, typer.Option(help="output directory")],
    zoo: ZooOption = None,
    model_ref: ModelOption = None,
    task_ref: TaskOption = None,
    finetune_epochs: Annotated[float, typer.Option(help="fine-tune budget after compression (0 = none)")] = 1.0,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for the latency measurement")] = 1,
    seed: SeedOption = 0,
) -> None:
    """Compress a zoo model by a policy; write the model (policy + state_dict), its ONNX file and a summary."""
    from autocompress.calls import fit_inputs, split_example
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
    entry = _source(zoo, model_ref, task_ref, seed, pretrained=True)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        chosen = space.validate(chosen)
    except PolicyError as error:
        _fail(str(error))
    evaluator = Evaluator(entry.task, finetune_epochs=finetune_epochs, split="test", seed=seed, progress=True)
    result = evaluator.evaluate(entry.model, chosen, space=space)
    save(result, out)
    example = fit_inputs(entry.model, entry.task.example_input(32))
    small_path = export_onnx(result.model, out / "model.onnx", example, output=space.output)
    original_path = export_onnx(entry.model, out / "original.onnx", example, output=space.output)
    latency = compare_latency({"original": original_path, "compressed": small_path}, split_example(example)[0], threads=threads)
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


@app.command("compress")
def compress_cmd(
    zoo: ZooOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
    target: Annotated[str, typer.Option(help="the budget: latency_ratio<=0.5, latency_ms<=2, flops_ratio<=0.25, params<=1e5, ...")] = "latency_ratio<=0.5",
    max_drop: Annotated[float, typer.Option(help="points of the metric the delivered model may lose")] = 1.0,
    budget: Annotated[int, typer.Option(help="candidates to evaluate (learning-rate trials included)")] = 24,
    out: Annotated[Path, typer.Option(help="where to write the file to deploy (model.onnx) and policy/state_dict/meta")] = Path("best"),
    storage: Annotated[str, typer.Option(help="the study's storage (a SQLite file or an RDB URL); the same call resumes")] = "runs/compress.db",
    int8: Annotated[str, typer.Option(help="auto (int8 where measured faster and within the drop), yes or no")] = "auto",
    runtime: Annotated[str, typer.Option(help="where latency is measured: ort-cpu")] = "ort-cpu",
    finetune_steps: Annotated[int | None, typer.Option(help="training steps per candidate (default: 3 epochs, 100-400)")] = None,
    final_finetune: Annotated[int | None, typer.Option(help="training steps per finalist (default: 75 epochs, 1000-5000)")] = None,
    lr: Annotated[str, typer.Option(help="fine-tune learning rate, or auto (tried on the uniform policy)")] = "auto",
    seed: SeedOption = 0,
) -> None:
    """Compress a model for a target and write the file to deploy: one command from model and data to ONNX."""
    from autocompress.budget import BudgetError
    from autocompress.pipeline import TaskError, compress

    choices = {"auto": "auto", "yes": True, "no": False}
    if int8 not in choices:
        _fail(f"--int8 {int8!r}: allowed: {', '.join(choices)}")
    try:
        rate = lr if lr == "auto" else float(lr)
    except ValueError:
        _fail(f"--lr {lr!r}: give a number or auto")
    entry = _source(zoo, model, task, seed, pretrained=True)
    try:
        result = compress(entry.model, entry.task, target=target, max_drop=max_drop, budget=budget, storage=storage,
                          runtime=runtime, finetune_steps=finetune_steps, final_finetune=final_finetune, lr=rate,
                          seed=seed, console=console)
    except (BudgetError, TaskError, ValueError) as error:
        _fail(str(error))
    best = result.best()
    if best is None:
        console.print(f"[yellow]nothing written:[/yellow] {result.nearest()}; every candidate is saved in {storage}")
        raise typer.Exit(1)
    path = best.export(out, int8=choices[int8])
    deploy = json.loads((out / "meta.json").read_text())["deploy"]
    chosen = deploy["variants"][deploy["chosen"]]
    console.print(f"wrote {path} ({deploy['chosen']}): {entry.task.metric_name} {chosen['metric']:.2f} on {deploy['split']} "
                  f"(original {deploy['variants']['original']['metric']:.2f}), latency {chosen['latency_ratio']:.2f}x the "
                  f"original's (ONNX Runtime, batch {deploy['batch']}, {deploy['threads']} thread, measured side by side)")


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
        searches = [n for n in names if "/confirm-" not in n]  # confirm's companions are chosen by name only
        names = searches or names
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
    int8: Annotated[bool, typer.Option("--int8", help="also write model.int8.onnx (static int8, calibrated on training inputs)")] = False,
    calibration_batches: Annotated[int, typer.Option(help="with --int8: training batches (of the task's batch size) to calibrate on")] = 8,
) -> None:
    """Rebuild a candidate, fine-tune it, save it (policy + state_dict) and export it to ONNX (and int8)."""
    from autocompress.evaluate import Evaluator
    from autocompress.export import export_onnx
    from autocompress.saving import save

    if calibration_batches < 1:
        _fail(f"--calibration-batches must be >= 1, got {calibration_batches}")
    opened = _open_study(storage, study)
    try:
        record = opened.record(trial)
    except KeyError as error:
        _fail(str(error))
    config, spec = _stored_config(opened)
    task = spec.task
    try:
        model, space = spec.target(record.policy)  # an APQ candidate: its sub-network of the supernet
    except ValueError as error:
        _fail(f"#{trial}: {error}")
    settings = config.evaluator_kwargs()
    if finetune_epochs is not None:
        settings["finetune_epochs"] = finetune_epochs
    result = Evaluator(task, progress=True, **settings).evaluate(model, record.policy, space=space)
    save(result, out)
    if record.policy.activations == "dynamic":  # one file, each layer at the policy's precision (int8 or fp32)
        _export_dynamic(result.model, task, out)
        return
    export_onnx(result.model, out / "model.onnx", task.example_input(8))
    console.print(f"#{trial}: {result.metric_name} {result.metric:.2f} (original {result.metric_original:.2f}); "
                  f"FLOPs {100 * result.ratios['flops']:.1f} %; wrote {out}/ (policy.json, state_dict.pt, meta.json, model.onnx)")
    if int8:
        _export_int8(result.model, task, out, calibration_batches)


def _export_dynamic(model, task, out: Path) -> None:  # noqa: ANN001
    """Write out/model.onnx with ONNX Runtime dynamic int8 for the policy's 8-bit layers; print its metric."""
    from autocompress.deploy import onnx_metric
    from autocompress.deploy_dynamic import export_dynamic_int8
    from autocompress.export import ExportMismatchError

    split = "test" if task.test is not None else "val"
    try:
        made = export_dynamic_int8(model, out / "model.onnx", task.example_input(8), check_inputs=task.split(split)[0][:64])
    except (ExportMismatchError, ValueError) as error:
        _fail(f"dynamic int8 export: {error}")
    console.print(f"wrote {made.path}: {len(made.int8_layers)} layers in int8 (ONNX Runtime dynamic), the rest fp32; "
                  f"{task.metric_name} on {split} (ONNX Runtime): {onnx_metric(made.path, task, split):.4f}")


def _export_int8(model, task, out: Path, calibration_batches: int) -> None:  # noqa: ANN001
    """Write out/model.int8.onnx beside model.onnx; print sizes and fp32 vs int8 metric (ONNX Runtime)."""
    from autocompress.deploy import Int8AccuracyError, export_int8, onnx_metric
    from autocompress.report import human

    calibration = task.split("train")[0][: calibration_batches * task.batch_size]
    try:
        made = export_int8(model, out / "model.onnx", task.example_input(8), calibration)
    except (Int8AccuracyError, ValueError) as error:
        _fail(f"int8 export: {error}")
    split = "test" if task.test is not None else "val"
    fp32_metric, int8_metric = onnx_metric(made.fp32_path, task, split), onnx_metric(made.int8_path, task, split)
    console.print(f"int8: model.int8.onnx {human(made.int8_bytes, 'B')} vs model.onnx {human(made.fp32_bytes, 'B')} "
                  f"({made.size_ratio:.1f}x smaller); {task.metric_name} on {split} (ONNX Runtime): "
                  f"fp32 {fp32_metric:.2f}, int8 {int8_metric:.2f}; calibrated on {len(calibration)} training samples")


def _stored_config(opened):  # noqa: ANN202
    """The search configuration a study stores, and the evaluation spec it builds (model, task, space, supernet)."""
    from autocompress.search.config import load_config
    from autocompress.search.runner import spec_from_config

    stored = opened.meta.get("config")
    if "refine" in opened.meta:
        _fail("this study holds an epsilon sweep of `autocompress refine`: a refined model is rebuilt from the units it "
              "keeps, not from a policy; rebuild one with `autocompress refine --zoo ZOO --epsilon E --out DIR` "
              "(each candidate's epsilon is in its tags)")
    if not stored:
        _fail("this study stores no configuration (it was made from Python): use autocompress.search.confirm / apply_policy")
    config = load_config(stored)
    return config, spec_from_config(config)


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

    opened = _open_study(storage, study)
    config, spec = _stored_config(opened)
    task = spec.task
    settings = {k: v for k, v in config.evaluator_kwargs().items() if k not in ("finetune_epochs", "finetune_steps", "seed")}
    constraints = [c.strip() for c in best.split(",")]
    try:
        confirmed = confirm(opened, spec.model, task, spec.space, constraints=constraints, top=top,
                            finetune_epochs=finetune_epochs, evaluator=settings, seed=config.seed, workers=workers,
                            console=console, elastic=config.load_elastic())
        winner = confirmed.best(constraints, objective="accuracy")
    except (LookupError, ValueError) as error:
        _fail(str(error))
    console.print(_front_table(confirmed, confirmed.completed(), f"confirmed with {finetune_epochs:g} epochs ({confirmed.optuna.study_name})"))
    console.print(f"best meeting {best}: #{winner.number} ({task.metric_name} {winner.values['metric']:.2f}); "
                  f"export it with: autocompress export {storage} --study {confirmed.optuna.study_name!r} --trial {winner.number} --out best/")


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
        _fail(f"--epsilon must be a number >= 0 or 'auto', got {text!r}")
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

    from autocompress.search.refine import DEFAULT_CONFIDENCE, choose_epsilon, quality_gate
    from autocompress.search.refine_study import stored_points, sweep_study

    try:
        opened = sweep_study(entry.model, entry.task, storage, name, statistic=statistic, retrain_epochs=retrain_epochs,
                             seed=seed, progress=True)
    except ValueError as error:
        _fail(str(error))
    points = stored_points(opened)
    table = Table(title=f"epsilon sweep: {len(points)} refined models (validation split), Pareto front (accuracy, params) marked")
    for column in ("epsilon", "hidden", "params", "params %", "before retrain", "after retrain", "loss gap", "front"):
        table.add_column(column, justify="right")
    original = opened.meta["original"]["params"]
    for p in points:
        table.add_row(f"{p.epsilon:g}", "-".join(map(str, p.hidden)), f"{p.params:,}", f"{100 * p.params / original:.1f}",
                      f"{p.metric_before_retrain:.3f}", f"{p.metric:.3f}", f"{p.loss_gap:+.4f} ± {p.loss_gap_se:.4f}",
                      "✓" if p.on_front else "")
    console.print(table)
    console.print(f"storage {storage}, study {name}: `autocompress front {storage} --study {name} --plot front.png`")
    if epsilon != "auto":
        return epsilon
    gate = quality_gate(entry.model, entry.task, tolerance, "auto", DEFAULT_CONFIDENCE)
    chosen = choose_epsilon(points, gate.metric, gate.tolerance, original_loss=gate.loss,
                            loss_tolerance=gate.loss_tolerance, confidence=gate.confidence)
    if chosen is None:
        console.print(f"[yellow]no epsilon kept the validation metric within {gate.tolerance:g}: nothing is removed[/yellow]")
        return 0.0
    console.print(f"chosen from the sweep: epsilon {chosen.epsilon:g} (the largest within tolerance {gate.tolerance:g})")
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
    from autocompress.transforms.units import STATISTICS, DenseStructureError, dense_chain
    from autocompress.zoo import list_zoo

    chosen_epsilon = _parse_epsilon(epsilon)
    if tolerance is not None and not tolerance >= 0:
        _fail(f"--tolerance must be >= 0 (in the metric's units), got {tolerance}")
    if not retrain_epochs >= 0:
        _fail(f"--retrain-epochs must be >= 0, got {retrain_epochs}")
    if statistic not in STATISTICS:
        _fail(f"unknown --statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    mlps = [name for name in list_zoo() if name.endswith("-mlp")]
    structure = _source(zoo, model_ref, task_ref, seed, pretrained=False)
    try:
        dense_chain(structure.model, structure.example_input)
    except DenseStructureError as error:
        _fail(f"refine needs a dense network (an MLP), and {structure.name!r} is not one: {error}. Zoo MLPs: {', '.join(mlps)}")
    entry = _source(zoo, model_ref, task_ref, seed, pretrained=True) if zoo is not None else structure
    zoo = entry.name
    if storage is not None:
        chosen_epsilon = _refine_sweep(entry, storage, study, chosen_epsilon, tolerance, retrain_epochs, statistic, seed)
    refined, report = refine_dense(entry.model, entry.task, chosen_epsilon, tolerance=tolerance,
                                   retrain_epochs=retrain_epochs, statistic=statistic, seed=seed)
    test = {"original": evaluate_metric(entry.model, entry.task, "test"), "refined": evaluate_metric(refined, entry.task, "test")}
    console.print(_units_table(report, f"{zoo}: hidden units ({statistic}, epsilon {report.epsilon:g}, {report.samples} training samples)"))
    if report.sweep:
        sweep = Table(title=f"epsilon sweep (from the top; tolerance {report.tolerance:g})")
        for column in ("epsilon", "params", "hidden", "val before retrain", "val after retrain"):
            sweep.add_column(column, justify="right")
        for point in report.sweep:
            sweep.add_row(f"{point.epsilon:g}", f"{point.params:,}", "-".join(map(str, point.hidden)),
                          f"{point.metric_before_retrain:.3f}", f"{point.metric:.3f}")
        console.print(sweep)
    summary = Table(title="before / after")
    for column in ("", "original", "refined"):
        summary.add_column(column, justify="right")
    summary.add_row("params", f"{report.params_before:,}", f"{report.params_after:,} ({100 * report.params_removed:.1f} % removed)")
    retrained = "-" if report.metric_retrained is None else f"{report.metric_retrained:.3f}"
    summary.add_row(f"val {report.metric_name}", f"{report.metric_original:.3f}",
                    f"{report.metric_before_retrain:.3f} before retrain, {retrained} after")
    summary.add_row(f"test {report.metric_name}", f"{test['original']:.3f}", f"{test['refined']:.3f}")
    console.print(summary)
    if report.met_tolerance is False:
        console.print(f"[yellow]no epsilon kept the validation metric within {report.tolerance:g}: nothing was removed[/yellow]")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in refined.state_dict().items()}, out / "state_dict.pt")
        saved = {"zoo": zoo, "seed": seed, "model": type(refined).__name__, "hidden": report.hidden,
                 "test": test, "report": report.model_dump()}
        (out / "report.json").write_text(json.dumps(saved, indent=2))
        console.print(f"wrote {out}/ (state_dict.pt, report.json); rebuild: {type(refined).__name__} with hidden={report.hidden}")


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
    from autocompress.search.optimize import optimize_policy
    from autocompress.search.strategies.allocate import cost_value
    from autocompress.search.strategies.seernet import fit_predictor

    opened = _open_study(storage, study)
    _config, spec = _stored_config(opened)
    task, space = spec.task, spec.space
    try:
        bound = Constraint.parse(budget)
    except ValueError as error:
        _fail(str(error))
    if bound.cost is None or not bound.upper:
        _fail(f"--budget {budget!r}: bound a cost from above, e.g. flops_ratio<=0.1, bitops<=2e6 or latency_ratio<=0.5")
    if bound.cost == "latency":
        _attach_latency(space, spec.model, task, opened, target)
    bound = str(bound)
    records = [r for r in opened.completed() if "metric" in r.values]
    if len(records) < 2:
        _fail(f"the study has {len(records)} completed candidates; the predictor needs at least 2")
    start = time.perf_counter()
    try:
        original = (opened.meta.get("original") or {}).get("metric")
        predictor = fit_predictor(space, records, original, kind=kind, who="optimize")
        fitted = time.perf_counter() - start
        result = optimize_policy(predictor, space, bound)
    except ValueError as error:
        _fail(str(error))
    base = cost_value(space, Policy(), result.key)
    console.print(f"predictor {predictor.kind_} fitted on {len(records)} labelled policies in {fitted:.2f} s; "
                  f"optimized for {bound} in {result.seconds:.2f} s")
    console.print(f"predicted {task.metric_name} {result.predicted:.2f}; {result.key} {result.cost:,.6g} "
                  f"= {result.cost / base:.4g} of the original (budget {result.budget:,.6g})")
    console.print(result.policy.to_json())
    if out is not None:
        result.policy.save(out)
        console.print(f"wrote {out}; measure it with: autocompress apply --policy {out} ...")


def _attach_latency(space, model, task, opened, target: str | None) -> None:  # noqa: ANN001
    """Give ``space`` a lookup-table latency model of ``model`` on the target (option, study settings, ort-cpu)."""
    from autocompress.hardware.policy_latency import latency_model_for
    from autocompress.hardware.targets import parse_target

    settings = dict((opened.meta.get("config") or {}).get("latency") or {})
    try:
        if target is not None:
            chosen = parse_target(target)
            settings.update(runtime=chosen.runtime, threads=chosen.threads, batch=chosen.batch, repeats=chosen.repeats)
        space.latency_model = latency_model_for(space, model, task, settings)
    except ValueError as error:
        _fail(str(error))
    console.print(f"latency model: lookup table on {space.latency_model.table.target.name} (layers timed once, then cached)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
