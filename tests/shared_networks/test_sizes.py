"""Sizes of the package's code: no module over :data:`MAX_MODULE_LINES` lines, no function over
:data:`MAX_FUNCTION_LINES` lines (the whole ``def``: decorators, signature, docstring and body; methods and nested
functions too). Nothing is excluded.

The targets are 500 and 80 lines; the limits leave a small margin, so that a long docstring does not fail a function
whose code is short. A module that grows past the limit is split along its content (as ``data/btcv.py`` into
``btcv_layouts``, ``btcv_splits`` and the datalist), a function into named helpers that follow the data.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shared_networks

PACKAGE = Path(shared_networks.__file__).resolve().parent
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 90


def module_files(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def function_lines(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """``("file:line name", lines)`` of every function and method of ``path`` (named relative to ``root``), nested
    ones too: from its first decorator (or its ``def``) to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            name = f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name}"
            found.append((name, node.end_lineno - start + 1))
    return found


def long_functions(paths: list[Path], limit: int = MAX_FUNCTION_LINES, root: Path = PACKAGE) -> list[str]:
    return [f"{name} ({n} lines)" for path in paths for name, n in function_lines(path, root) if n > limit]


def long_modules(paths: list[Path], limit: int = MAX_MODULE_LINES, root: Path = PACKAGE) -> list[str]:
    lines = {p.relative_to(root).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    return [f"{name} ({n} lines)" for name, n in lines.items() if n > limit]


def test_the_detectors_count_whole_definitions(tmp_path: Path) -> None:
    limit = 10
    body = "".join(f"        x{i} = {i}\n" for i in range(limit - 2))
    (tmp_path / "m.py").write_text(
        "class A:\n"
        "    @staticmethod\n"  # decorator, def, docstring and body: limit + 1 lines
        "    def long():\n"
        '        """Doc."""\n' + body + "\n\n"
        "def outer():\n"  # limit + 2 lines
        "    def inner():\n" + body + "        pass\n"  # limit lines: not too long
        "    return inner\n"
    )
    assert long_functions([tmp_path / "m.py"], limit, tmp_path) == [
        f"m.py:{limit + 5} outer ({limit + 2} lines)",
        f"m.py:3 long ({limit + 1} lines)",
    ]
    assert long_functions([tmp_path / "m.py"], limit - 1, tmp_path)[-1] == f"m.py:{limit + 6} inner ({limit} lines)"
    (tmp_path / "short.py").write_text("x = 1\n" * limit)
    assert long_modules(sorted(tmp_path.glob("*.py")), limit, tmp_path) == [f"m.py ({2 * limit + 6} lines)"]


@pytest.mark.parametrize("kind", ["modules", "functions"])
def test_no_module_or_function_of_the_package_is_too_long(kind: str) -> None:
    files = module_files()
    assert len(files) > 50 and PACKAGE / "__init__.py" in files
    found = long_modules(files) if kind == "modules" else long_functions(files)
    assert found == [], f"split these {kind} along their content: " + ", ".join(found)
