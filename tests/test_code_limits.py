"""Size limits of the library's source, read from the files in ``src/minbert``: no function (or
method, or nested function) longer than 100 lines, decorators included, and no module longer
than 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "minbert"
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _long_functions(path: Path, root: Path = PACKAGE) -> list[str]:
    """``file:line name (N lines)`` of each function of ``path`` over the limit."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = node.end_lineno - start + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_the_package_has_modules_to_check():
    names = {p.relative_to(PACKAGE).as_posix() for p in _modules()}
    assert {"cli.py", "config.py", "training/trainer.py", "inference/server.py"} <= names


def test_no_function_is_longer_than_100_lines():
    assert [f for path in _modules() for f in _long_functions(path)] == []


def test_no_module_is_longer_than_500_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_the_function_check_counts_decorators_and_nested_functions(tmp_path):
    def block(indent: str, n: int) -> str:
        return "\n".join(f"{indent}x{i} = {i}" for i in range(n))

    # a decorated function of 101 lines with a decorator, a nested async one of 101, one of 100
    (tmp_path / "probe.py").write_text(
        f"@staticmethod\ndef decorated():\n{block('    ', 99)}\n\n\n"
        f"def outer():\n    async def inner():\n{block('        ', 100)}\n    return inner\n\n\n"
        f"def exactly_100():\n{block('    ', 99)}\n"
    )
    assert _long_functions(tmp_path / "probe.py", tmp_path) == [
        "probe.py:2 decorated (101 lines)",
        "probe.py:104 outer (103 lines)",
        "probe.py:105 inner (101 lines)",
    ]
