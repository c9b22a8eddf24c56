"""House rule: no function in validate/ longer than CEILING statements, so that a reader can follow each one.

A function's size is the number of statements in its body (nested blocks counted statement by
statement; its docstring and the bodies of functions defined inside it are not counted — those are
measured on their own). Statements, not lines: `ruff format` spreads one call over many lines, which
makes a function longer to scroll but no harder to follow. The functions still over the ceiling are
listed in LONG_FUNCTIONS_DEBT; the list only shrinks: an entry that is now short enough (or gone) fails
the test until it is deleted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "validate"
CEILING = 65

#: "path relative to the repository:qualified name" of each function still over the ceiling
LONG_FUNCTIONS_DEBT = {
    "validate/predictions.py:table_from_frame",
}


def _statements(body: list[ast.stmt]) -> int:
    count = 0
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue  # measured on its own
        count += 1
        for field in ("body", "orelse", "finalbody"):
            count += _statements(getattr(stmt, field, None) or [])
        for handler in getattr(stmt, "handlers", None) or []:
            count += 1 + _statements(handler.body)
        for case in getattr(stmt, "cases", None) or []:
            count += 1 + _statements(case.body)
    return count


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return body[1:]
    return body


def function_sizes(source: str, path: str) -> dict[str, int]:
    """``{"path:qualified.name": statements}`` of every function and method in ``source``, nested ones too."""
    sizes: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                sizes[f"{path}:{name}"] = _statements(_without_docstring(child.body))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return sizes


def package_function_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    root = PACKAGE.parent
    for file in sorted(PACKAGE.rglob("*.py")):
        sizes.update(function_sizes(file.read_text(encoding="utf-8"), file.relative_to(root).as_posix()))
    return sizes


def test_function_sizes_count_statements_not_lines_docstrings_or_nested_functions():
    source = (
        'def short():\n    """Doc."""\n    return 1\n\n\n'
        "class C:\n    def method(self):\n"
        "        x = f(\n            1,\n            2,\n        )\n\n        return x\n\n\n"
        "def outer():\n    def inner():\n        pass\n    if True:\n        y = 1\n    else:\n        y = 2\n"
        "    try:\n        z = 1\n    except ValueError:\n        z = 2\n    return inner\n"
    )
    assert function_sizes(source, "m.py") == {
        "m.py:short": 1,
        "m.py:C.method": 2,  # one call over four lines is one statement
        "m.py:outer": 8,  # if + 2 branches, try + body + handler + its body, return (inner not counted)
        "m.py:outer.inner": 1,
    }


def test_no_function_over_the_ceiling_outside_the_debt_list():
    too_long = {
        name: n for name, n in package_function_sizes().items() if n > CEILING and name not in LONG_FUNCTIONS_DEBT
    }
    assert too_long == {}, f"split these functions into named steps (ceiling {CEILING} statements): {too_long}"


def test_the_debt_list_only_shrinks():
    sizes = package_function_sizes()
    paid = {name: sizes.get(name) for name in LONG_FUNCTIONS_DEBT if sizes.get(name, 0) <= CEILING}
    assert paid == {}, f"no longer over {CEILING} statements (or gone): delete from LONG_FUNCTIONS_DEBT: {paid}"
