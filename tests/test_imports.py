"""The project's modules import each other without a cycle, counting imports inside functions."""
from __future__ import annotations

import ast
import graphlib

from tests.conftest import REPO


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file."""
    modules = {path.stem: path for path in REPO.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        graph[name] = imported & modules.keys() - {name}
    return graph


def test_the_project_modules_import_each_other_without_a_cycle():
    graph = project_imports()
    assert {"report", "runs", "figures", "documents", "model", "cpu_kernels"} <= graph.keys()
    assert "runs" in graph["report"] and "report" in graph["documents"]  # the walk sees imports
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError, naming the cycle
