"""Commands on one model: ``zoo``, ``inspect``, ``profile``, ``policy``, ``apply``, ``demo``, ``compress``."""

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


@app.command("zoo")
def zoo_cmd() -> None:
    """List the bundled models."""
    from autocompress.zoo import list_zoo

    for name in list_zoo():
        common.console.print(name)


@app.command()
def inspect(zoo: ZooOption = None, model: ModelOption = None, task: TaskOption = None, seed: SeedOption = 0) -> None:
    """Layer table: type, shape, params, FLOPs, BitOps, which methods apply, and why a layer is left alone."""
    from autocompress.policy import Policy
    from autocompress.report import human, layer_table
    from autocompress.space import SearchSpace

    entry = model_source(zoo, model, task, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    common.console.print(layer_table(space, title=f"{entry.name}: layers (per-sample costs)"))
    total = space.cost(Policy())
    common.console.print(f"total: params {human(total.params)}, FLOPs {human(total.flops)}, BitOps {human(total.bitops)}, bytes {human(total.bytes, 'B')}")
    common.console.print(f"{len(space.groups)} channel groups, {len(space.genes)} genes")


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
        fail(str(error))
    entry = model_source(zoo, model_ref, task_ref, seed, pretrained=False)
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
    common.console.print(rows)
    common.console.print(f"layers {estimate.layers_ms:.4f} ms + overhead {estimate.overhead_ms:.4f} ms "
                  f"(calibrated on the {'original' if original is not None else 'model itself'}) "
                  f"= estimate {estimate.total_ms:.4f} ms")
    common.console.print(f"measured whole model: median {whole.median_ms:.4f} ms (p10 {whole.p10_ms:.4f}, p90 {whole.p90_ms:.4f}, "
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

    entry = model_source(zoo, model, task, seed, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        made = Policy.uniform(space, prune=prune, rank=rank, weight_bits=weight_bits, act_bits=act_bits)
    except ValueError as error:
        fail(str(error))
    made.save(out)
    common.console.print(f"wrote {out} ({len(made.layers)} layers)")


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
    from autocompress.export import compare_latency, export_onnx
    from autocompress.policy import Policy
    from autocompress.report import cost_comparison
    from autocompress.saving import save
    from autocompress.space import PolicyError, SearchSpace

    if not policy.exists():
        fail(f"policy file {policy} does not exist")
    try:
        chosen = Policy.load(policy)
    except (ValueError, json.JSONDecodeError) as error:
        fail(f"{policy} is not a valid policy: {error}")
    entry = model_source(zoo, model_ref, task_ref, seed, pretrained=True)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    try:
        chosen = space.validate(chosen)
    except PolicyError as error:
        fail(str(error))
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
    common.console.print(cost_comparison(result.original_cost, result.cost))
    name = result.metric_name
    after = "-" if result.metric_after_finetune is None else f"{result.metric_after_finetune:.2f}"
    common.console.print(f"{name}: original {result.metric_original:.2f}, compressed {result.metric_before_finetune:.2f} before fine-tune, {after} after")
    o, c = latency["original"].median_ms, latency["compressed"].median_ms
    common.console.print(f"ONNX Runtime, batch 32, {threads} thread: original {o:.3f} ms, compressed {c:.3f} ms ({o / c:.2f}× faster)")
    common.console.print(f"wrote {out}/ (policy.json, state_dict.pt, meta.json, model.onnx, summary.json)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    finetune_epochs: float = 1.0,
    threads: int = 1,
    seed: SeedOption = 0,
) -> None:
    """End-to-end on MNIST-1D: uniform prune / low-rank / mixed 4-bit policies at 50 %, 25 %, 10 % FLOPs."""
    from autocompress.demo import run_demo

    run_demo(out, finetune_epochs=finetune_epochs, seed=seed, threads=threads, console=common.console)


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
    from autocompress.checks import TaskError
    from autocompress.pipeline import compress

    choices = {"auto": "auto", "yes": True, "no": False}
    if int8 not in choices:
        fail(f"--int8 {int8!r}: allowed: {', '.join(choices)}")
    try:
        rate = lr if lr == "auto" else float(lr)
    except ValueError:
        fail(f"--lr {lr!r}: give a number or auto")
    entry = model_source(zoo, model, task, seed, pretrained=True)
    try:
        result = compress(entry.model, entry.task, target=target, max_drop=max_drop, budget=budget, storage=storage,
                          runtime=runtime, finetune_steps=finetune_steps, final_finetune=final_finetune, lr=rate,
                          seed=seed, console=common.console)
    except (BudgetError, TaskError, ValueError) as error:
        fail(str(error))
    best = result.best()
    if best is None:
        common.console.print(f"[yellow]nothing written:[/yellow] {result.nearest()}; every candidate is saved in {storage}")
        raise typer.Exit(1)
    path = best.export(out, int8=choices[int8])
    deploy = json.loads((out / "meta.json").read_text())["deploy"]
    chosen = deploy["variants"][deploy["chosen"]]
    common.console.print(f"wrote {path} ({deploy['chosen']}): {entry.task.metric_name} {chosen['metric']:.2f} on {deploy['split']} "
                  f"(original {deploy['variants']['original']['metric']:.2f}), latency {chosen['latency_ratio']:.2f}x the "
                  f"original's (ONNX Runtime, batch {deploy['batch']}, {deploy['threads']} thread, measured side by side)")
