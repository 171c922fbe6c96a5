"""The package's layers: no module imports a layer above its own, the imports have no cycle, and importing the facade
loads only the runtime layers (what a release packs). The study sub-package: its modules in one order, none calling
back up (not the command line, not an earlier step calling a later one), short functions and modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import shared_networks

PACKAGE = Path(shared_networks.__file__).resolve().parent
NAME = PACKAGE.name
# study imports only utils (numpy, MONAI's ConfigParser, PIL at call time): above the runtime layers, not released,
# below the tools (which may read it) and the command lines (which call it); dicom (DICOM writers, STOW-RS for a
# PACS) imports only utils, is not released, and is called by the command lines
LAYERS = ("utils", "networks", "engine", "data", "validation", "synthetic", "dicom", "study", "tools", "cli")
RANK = {layer: i for i, layer in enumerate(LAYERS)}
FACADE_RANK = RANK["validation"]  # the root __init__ may import utils..validation
EXCLUDED = ("synthetic", "dicom", "study", "tools", "cli")  # not loaded by `import shared_networks`, not released
# the study's modules, each importing only those before it: the cross-validation driver calls the single study
STUDY_STEPS = ("subsets", "bootstrap", "evaluations", "runs", "summary", "render", "orchestrate", "crossval", "levers")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_rank(module: str) -> int:
    """Rank of a module of the package; the facade (the package itself) sits just above ``validation``."""
    parts = module.split(".")
    if len(parts) == 1:
        return FACADE_RANK
    if parts[1] not in RANK:
        raise AssertionError(f"{module} is outside the layers {LAYERS}: put it in one of them.")
    return RANK[parts[1]]


def imported_modules(path: Path, module: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (top level, in functions, relative imports too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == NAME or name.startswith(NAME + "."):
                while name not in modules and "." in name:  # `from pkg.mod import Name` -> pkg.mod
                    name = name.rsplit(".", 1)[0]
                if name in modules:
                    found.add(name)
    found.discard(module)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {m: imported_modules(p, m, set(files)) for m, p in files.items()}


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import of a module ``b`` in a higher layer than ``a``'s."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_rank(target) > layer_rank(module) or (len(module.split(".")) > 1 and target == NAME):
                bad.append(f"{module} -> {target}")
    return bad


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None``.

    A package is not counted as importing its own sub-modules' parents: ``pkg.sub.mod`` importing ``pkg.sub``
    (whose ``__init__`` imports ``pkg.sub.mod``) is a cycle, and reported.
    """
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_detectors_flag_a_bad_graph() -> None:
    bad = {
        f"{NAME}.utils.files": {f"{NAME}.engine.seeding"},  # upward
        f"{NAME}.engine.seeding": {f"{NAME}.engine.optim"},
        f"{NAME}.engine.optim": {f"{NAME}.engine.seeding"},  # cycle
        f"{NAME}.data.btcv": {NAME},  # a layer importing the facade
        f"{NAME}": {f"{NAME}.cli.prepare"},  # the facade importing a tool
        f"{NAME}.cli.prepare": {f"{NAME}.data.btcv"},  # fine
    }
    assert upward_imports(bad) == [
        f"{NAME} -> {NAME}.cli.prepare",
        f"{NAME}.data.btcv -> {NAME}",
        f"{NAME}.utils.files -> {NAME}.engine.seeding",
    ]
    assert find_cycle(bad) == [NAME, f"{NAME}.cli.prepare", f"{NAME}.data.btcv", NAME]
    del bad[f"{NAME}.data.btcv"]
    assert find_cycle(bad) == [f"{NAME}.engine.optim", f"{NAME}.engine.seeding", f"{NAME}.engine.optim"]
    del bad[f"{NAME}.engine.optim"]
    assert find_cycle(bad) is None


def test_detectors_read_relative_and_function_level_imports(tmp_path: Path) -> None:
    root = tmp_path / NAME
    for sub in ("utils", "engine"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "utils" / "files.py").write_text("def f():\n    from ..engine import seeding\n")
    (root / "engine" / "seeding.py").write_text("from . import optim\n")
    (root / "engine" / "optim.py").write_text(f"import {NAME}.engine.seeding\n")
    graph = import_graph(root)
    assert graph[f"{NAME}.utils.files"] == {f"{NAME}.engine", f"{NAME}.engine.seeding"}
    assert upward_imports(graph) == [
        f"{NAME}.utils.files -> {NAME}.engine",
        f"{NAME}.utils.files -> {NAME}.engine.seeding",
    ]
    assert find_cycle(graph) == [f"{NAME}.engine.optim", f"{NAME}.engine.seeding", f"{NAME}.engine.optim"]


def test_every_module_sits_in_a_layer() -> None:
    for module in import_graph():
        layer_rank(module)


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_the_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("layer", EXCLUDED)
def test_runtime_layers_do_not_import_the_tools(layer: str) -> None:
    graph = import_graph()
    runtime = [m for m in graph if layer_rank(m) <= FACADE_RANK]
    assert not [f"{m} -> {t}" for m in runtime for t in graph[m] if t.startswith(f"{NAME}.{layer}")]


def test_importing_the_package_loads_only_the_runtime_layers() -> None:
    code = (
        "import json, sys; import shared_networks; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shared_networks'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert f"{NAME}.networks.mae" in loaded and f"{NAME}.data.btcv" in loaded
    assert f"{NAME}.validation.workflow" in loaded  # the training workflows' split check
    assert [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in EXCLUDED] == []


# the study sub-package


def study_graph() -> dict[str, set[str]]:
    return {m: t for m, t in import_graph().items() if m == f"{NAME}.study" or m.startswith(f"{NAME}.study.")}


def test_the_study_never_imports_the_command_lines_or_the_tools() -> None:
    graph = study_graph()
    assert f"{NAME}.study.orchestrate" in graph and f"{NAME}.study.crossval" in graph
    assert [
        f"{m} -> {t}" for m, targets in graph.items() for t in targets if t.startswith((f"{NAME}.cli", f"{NAME}.tools"))
    ] == []


def test_the_study_modules_import_only_earlier_steps() -> None:
    """No call back up inside the study: crossval may call orchestrate's run_study, never the reverse; no step
    imports the sub-package's facade (its ``__init__``)."""
    graph = study_graph()
    steps = {f"{NAME}.study.{s}": i for i, s in enumerate(STUDY_STEPS)}
    assert set(graph) == {f"{NAME}.study", *steps}, "a new study module: give it its place in STUDY_STEPS"
    bad = [
        f"{m} -> {t}"
        for m in steps
        for t in sorted(graph[m])
        if t.startswith(f"{NAME}.study") and (t not in steps or steps[t] >= steps[m])
    ]
    assert bad == []


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``"file:line name (n lines)"`` for every function or method (nested ones too) longer than ``limit`` lines,
    from its ``def`` to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_long_functions_are_found(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(80))  # a method: 1 + 80 lines
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\nclass A:\n    def long(self):\n{body}")
    assert long_functions(tmp_path / "m.py") == ["m.py:6 long (81 lines)"]


def test_the_study_functions_and_modules_are_short() -> None:
    files = sorted((PACKAGE / "study").glob("*.py"))
    assert len(files) == len(STUDY_STEPS) + 1
    assert [f for p in files for f in long_functions(p)] == []
    lines = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    assert {n: k for n, k in lines.items() if k > MAX_MODULE_LINES} == {}
