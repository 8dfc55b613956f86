"""Command-line interface: ``autocompress inspect | policy | apply | demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
