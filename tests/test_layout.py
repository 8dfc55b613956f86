"""The package's imports run one way (docs/architecture.md, "Layers").

Every module of ``src/autocompress`` is read with ``ast``; each of its imports of another part of
the package (at the top, inside a function or lazily — only ``if TYPE_CHECKING:`` blocks, which
never run, are left out) must go to its own layer or one below. Within a layer the parts (a
top-level module or a subpackage) must not import each other in a cycle, and no module imports
another's private (underscored) names.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import autocompress

ROOT = Path(autocompress.__file__).parent

#: bottom to top; each entry names the parts (top-level modules or subpackages) of one layer
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("calls", "trace", "files", "quiet", "threads", "budget", "layers", "policy", "task", "cost", "evolve")),
    ("transforms", ("transforms", "replacements")),
    ("space", ("analytic", "discovery", "space", "apply")),
    ("evaluate", ("finetune", "evaluate")),
    ("zoo", ("zoo",)),
    ("export", ("export",)),
    ("hardware", ("hardware",)),
    ("elastic", ("elastic",)),
    ("saving", ("saving",)),
    ("predict", ("predict",)),
    ("search", ("search",)),
    ("api", ("checks", "result", "pipeline", "report", "demo")),
    ("cli", ("cli", "__main__")),
]
LAYER_OF = {part: index for index, (_, parts) in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """``autocompress.search.study`` -> ``search``; the package itself -> None."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for each of ``path``'s imports of ``autocompress``, TYPE_CHECKING blocks left out."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from autocompress import layers` imports the module autocompress.layers
            folder = ROOT.parent.joinpath(*target.split("."))
            submodules = [f"{target}.{a.name}" for a in node.names
                          if (folder / f"{a.name}.py").exists() or (folder / a.name / "__init__.py").exists()]
            found.extend((node.lineno, name) for name in submodules or [target])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return [(line, target) for line, target in found if target == "autocompress" or target.startswith("autocompress.")]


def edges() -> list[tuple[str, int, str, str, str]]:
    """(file, line, importing part, imported part, imported module) across parts."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        source = part_of(module_name(path))
        if source is None:  # the package's __init__: the public names, gathered from every layer
            continue
        for line, target in imports(path):
            destination = part_of(target)
            if destination != source:
                out.append((str(path.relative_to(ROOT)), line, source, destination or "autocompress", target))
    return out


def test_every_part_has_a_layer():
    parts = {part_of(module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert sorted(parts - set(LAYER_OF)) == [], "give each new module or subpackage a layer in LAYERS (and docs/architecture.md)"


def test_imports_run_one_way():
    upward = [f"{file}:{line}: {source} ({LAYERS[LAYER_OF[source]][0]}) imports {target} ({LAYERS[LAYER_OF[dest]][0]})"
              if dest in LAYER_OF else f"{file}:{line}: {source} imports the package itself ({target})"
              for file, line, source, dest, target in edges()
              if dest not in LAYER_OF or LAYER_OF[dest] > LAYER_OF.get(source, -1)]
    assert upward == [], "imports of a higher layer:\n" + "\n".join(upward)


def test_no_cycles_between_parts():
    graph: dict[str, set[str]] = defaultdict(set)
    for _, _, source, dest, _ in edges():
        graph[source].add(dest)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == [], "import cycles between parts: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("autocompress")):
                private += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == [], "a name used by another module is public (no leading underscore):\n" + "\n".join(private)


def test_optuna_through_its_public_api_only():
    private = {"_storage", "_trial_id", "_backend", "_study_id", "_cached_frozen_trial"}  # Optuna's own, seen used before
    found = [f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}" for path in sorted(ROOT.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr in private]
    assert found == [], "\n".join(found)


def test_the_checker_sees_lazy_imports_and_skips_type_checking(tmp_path, monkeypatch):
    package = tmp_path / "autocompress"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from autocompress.cli import app\n"
        "def f():\n    from autocompress.search.study import Study\n    from ..policy import Policy\n")
    monkeypatch.setattr(f"{__name__}.ROOT", package)
    assert imports(package / "sub" / "a.py") == [(2, "autocompress.sub"), (6, "autocompress.search.study"), (7, "autocompress.policy")]
