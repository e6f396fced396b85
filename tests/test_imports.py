"""The import direction, across folders: each module imports only the layers below its own (or
modules of its own folder), so the graph has no cycle and reporting never reaches torch."""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys

from tests.conftest import REPO

# lowest first; a module belongs to the layer of its longest matching name
LAYERS = [
    ["config"],
    # files written whole or not at all; an old config.json in the current names; the presets
    ["runfolder.files", "runfolder.migration", "plans"],
    ["reporting", "speed", "baselines"],  # torch-free reporting; the speed paths; the baseline models
    ["data_loader"],
    ["model"],
    ["runfolder"],  # checkpoints and weights: in and out of a run folder
    ["evaluate"],
    ["train_model"],
    ["tools"],
]


def module_names() -> dict[str, object]:
    """Dotted module name -> its file, for the project's modules (tests and results aside)."""
    names = {}
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in {"tests", "results", "log", "data"} or path.name == "__init__.py":
            continue
        names[".".join(relative.with_suffix("").parts)] = path
    return names


def layer(module: str) -> int:
    matches = [(len(prefix), rank) for rank, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of LAYERS"
    return max(matches)[1]


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (inside functions too)."""
    names = module_names()
    graph = {}
    for name, path in names.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {module for module in imported if module in names} - {name}
    return graph


def test_the_walk_sees_the_imports():
    graph = project_imports()
    assert {"reporting.report", "reporting.runs", "model", "speed.cpu_kernels", "tools.sweep"} <= graph.keys()
    assert "reporting.runs" in graph["reporting.report"] and "speed.cpu_kernels" in graph["model"]


def test_every_import_goes_down_the_layers_or_stays_in_its_folder():
    wrong = [f"{module} (layer {layer(module)}) imports {imported} (layer {layer(imported)})"
             for module, imports in sorted(project_imports().items()) for imported in sorted(imports)
             if layer(imported) > layer(module)
             or (layer(imported) == layer(module) and imported.split(".")[0] != module.split(".")[0])]
    assert not wrong, "\n".join(wrong)


def test_the_project_modules_import_each_other_without_a_cycle():
    graphlib.TopologicalSorter(project_imports()).prepare()  # raises CycleError, naming the cycle


def test_importing_reporting_loads_neither_torch_nor_the_training_side():
    modules = [name for name in module_names() if name.startswith("reporting.")]
    assert len(modules) >= 5
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'evaluate', 'model', 'train_model') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_project_modules_are_imported_at_the_top_of_a_file_never_inside_a_function():
    """The layers make hidden imports unnecessary: an import inside a function would hide an
    edge of the graph from a reader."""
    names = module_names()
    hidden = []
    for name, path in names.items():
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""])
                if any(module.split(".")[0] in {n.split(".")[0] for n in names} for module in modules):
                    hidden.append(f"{name}:{node.lineno}")
    assert not hidden, hidden
