"""The package's structure: no import cycles, one network constructor."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import synthdet

PACKAGE = Path(synthdet.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """synthdet modules ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from synthdet.x import y" imports synthdet.x, or the submodule synthdet.x.y
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_synthdet_modules():
    graph = import_graph()
    assert len(graph) > 30 and "synthdet.network" in graph["synthdet.training.trainer"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_models_know_nothing_of_configs_or_checkpoints():
    """Architectures depend on other architectures and fixed feature kernels only."""
    graph = import_graph()
    for name in (n for n in graph if n.startswith("synthdet.models")):
        assert not {d for d in graph[name] if not d.startswith(("synthdet.models", "synthdet.features"))}, name


def test_one_network_constructor():
    """DetectorNet is assembled only by network.build_network."""
    calls = [(p.name, line) for p in PACKAGE.rglob("*.py") for line in p.read_text().splitlines()
             if re.search(r"\bDetectorNet\(", line) and not line.lstrip().startswith("class ")]
    assert calls == [("network.py", "    net = DetectorNet(extractor, backbone)")]


def test_the_command_line_loads_no_training_or_plotting_library_at_start():
    """`synthdet predict` stays within its memory budget: scikit-learn, matplotlib and the batch
    engines are imported only by the commands that use them."""
    heavy = "{'sklearn', 'matplotlib', 'pandas', 'pyarrow', 'ray', 'fastapi', 'uvicorn'}"
    code = f"import sys, synthdet.cli; print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
