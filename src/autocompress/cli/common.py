"""What every command shares: the Typer app, the console, the options, a model and task from --zoo or --model/--task, a stored study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def zoo_entry(name: str, seed: int, pretrained: bool):
    from autocompress.zoo import list_zoo, load_zoo

    if name not in list_zoo():
        fail(f"unknown zoo model {name!r}; allowed: {', '.join(list_zoo())}")
    return load_zoo(name, pretrained=pretrained, seed=seed, progress=True)


class Source:
    """A model, its task and an example input: a bundled one (--zoo) or the user's (--model/--task)."""

    def __init__(self, name: str, model, task, example) -> None:  # noqa: ANN001
        self.name, self.model, self.task, self.example_input = name, model, task, example


def model_source(zoo: str | None, model: str | None, task: str | None, seed: int, pretrained: bool) -> Source:
    if zoo is not None:
        if model or task:
            fail("give either --zoo or --model and --task, not both")
        entry = zoo_entry(zoo, seed, pretrained)
        return Source(zoo, entry.model, entry.task, entry.example_input)
    if not model or not task:
        fail("give --zoo NAME (see `autocompress zoo`) or both --model module:function and --task module:function")
    from autocompress.calls import fit_inputs
    from autocompress.search.config import ConfigError, load_user_objects

    try:
        made, data = load_user_objects(model, task)
    except ConfigError as error:
        fail(str(error))
    return Source(model, made, data, fit_inputs(made, data.example_input(1)))


# ---------------------------------------------------------------- search
StorageArg = Annotated[str, typer.Argument(help="the study's storage: a SQLite file or an RDB URL")]
StudyOption = Annotated[str | None, typer.Option("--study", help="study name (default: the only one in the storage)")]


def open_study(storage: str, name: str | None):
    import optuna

    from autocompress.search.study import Study, open_storage

    if "://" not in storage and not Path(storage).exists():
        fail(f"{storage} does not exist")
    names = optuna.get_all_study_names(open_storage(storage))
    if name is None:
        searches = [n for n in names if "/confirm-" not in n]  # confirm's companions are chosen by name only
        names = searches or names
        if len(names) != 1:
            fail(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}): choose one with --study")
        name = names[0]
    try:
        return Study.open(storage, name, create=False)
    except ValueError as error:
        fail(str(error))


def front_table(study, records, title: str):
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



def stored_config(opened):  # noqa: ANN202
    """The search configuration a study stores, and the evaluation spec it builds (model, task, space, supernet)."""
    from autocompress.search.config import load_config
    from autocompress.search.evaluation import spec_from_config

    stored = opened.meta.get("config")
    if "refine" in opened.meta:
        fail("this study holds an epsilon sweep of `autocompress refine`: a refined model is rebuilt from the units it "
              "keeps, not from a policy; rebuild one with `autocompress refine --zoo ZOO --epsilon E --out DIR` "
              "(each candidate's epsilon is in its tags)")
    if not stored:
        fail("this study stores no configuration (it was made from Python): use autocompress.search.confirm / apply_policy")
    config = load_config(stored)
    return config, spec_from_config(config)
