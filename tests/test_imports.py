"""The package map holds: no import cycle among the modules of `fgclip/` and `pipeline/` (imports
inside functions included), and the stage packages import only downstream of themselves:

* `fgclip.models` imports nothing of training (`fgclip.train`) or evaluation (`fgclip.eval`);
* `fgclip.eval` imports nothing of `fgclip.train` (it needs only a checkpoint);
* `pipeline` (stage 1) imports nothing of `fgclip`.

Read from the sources (ast), not by importing them, so an import that only runs inside a function
counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fgclip", "pipeline")
# (importer prefix, imported prefix): an edge that must not exist, and why
FORBIDDEN = (
    ("fgclip.models", "fgclip.train", "models import nothing of training"),
    ("fgclip.models", "fgclip.eval", "models import nothing of evaluation"),
    ("fgclip.eval", "fgclip.train", "evaluation imports nothing of training"),
    ("pipeline", "fgclip", "stage 1 imports nothing of fgclip"),
)


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lands in (a package's name counts as its __init__)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `module` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one, else a name of pkg
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    # a package's empty __init__ imports nothing; importing pkg.mod runs pkg/__init__ first, which is harmless
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_are_edges(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from fgclip.eval import prompts\n    import pipeline.shards\n")
    modules = {"fgclip.eval.prompts": Path(), "fgclip.eval": Path(), "pipeline.shards": Path(), "m": source}
    assert imported_modules("m", source, modules) == {"fgclip.eval.prompts", "pipeline.shards"}


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles (each a set of modules that import each other):\n" + "\n".join(
        " <-> ".join(component) for component in found)


def import_path(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """The shortest chain of imports from `start` to a module for which goal(module) holds."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph.get(node, ())):
            if succ not in paths:
                paths[succ] = paths[node] + [succ]
                if goal(succ):
                    return paths[succ]
                queue.append(succ)
    return None


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("importer, imported, rule", FORBIDDEN)
def test_stage_layering(importer, imported, rule):
    """Direct or through shared modules: a model that reaches training through `run_dir` still does."""
    graph = import_graph()
    chains = [import_path(graph, source, lambda m: _within(m, imported)) for source in sorted(graph)
              if _within(source, importer)]
    bad = [" -> ".join(chain) for chain in chains if chain]
    assert not bad, f"{rule}:\n" + "\n".join(bad)


def test_top_level_of_fgclip_stays_small():
    """The folder listing tells the flow: stage packages, and at most five shared modules beside them."""
    modules = sorted(p.name for p in (REPO / "fgclip").glob("*.py") if not p.name.startswith("__"))
    packages = sorted(p.name for p in (REPO / "fgclip").iterdir() if (p / "__init__.py").is_file())
    assert len(modules) <= 5, modules
    assert {"models", "train", "eval"} <= set(packages), packages
