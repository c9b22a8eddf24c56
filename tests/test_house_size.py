"""House rule: no function in validate/ longer than CEILING lines, so that a reader can follow each one.

A function is measured from its ``def`` line to its last line (docstring and comments included), as the
AST gives them. The functions still over the ceiling are listed in LONG_FUNCTIONS_DEBT; the list only
shrinks: an entry that is now short enough (or gone) fails the test until it is deleted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "validate"
CEILING = 80

#: "path relative to the repository:qualified name" of each function still over the ceiling
LONG_FUNCTIONS_DEBT = {
    "validate/predictions.py:table_from_frame",
}


def function_lengths(source: str, path: str) -> dict[str, int]:
    """``{"path:qualified.name": lines}`` of every function and method in ``source``, nested ones too."""
    lengths: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                assert child.end_lineno is not None
                lengths[f"{path}:{name}"] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return lengths


def package_function_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    root = PACKAGE.parent
    for file in sorted(PACKAGE.rglob("*.py")):
        lengths.update(function_lengths(file.read_text(encoding="utf-8"), file.relative_to(root).as_posix()))
    return lengths


def test_function_lengths_counts_def_to_last_line_and_nested_functions():
    source = (
        "def short():\n    return 1\n\n\n"
        "class C:\n    def method(self):\n        x = 1\n\n        return x\n\n\n"
        "def outer():\n    def inner():\n        pass\n    if True:\n        def hidden():\n            pass\n"
        "    return inner\n"
    )
    assert function_lengths(source, "m.py") == {
        "m.py:short": 2,
        "m.py:C.method": 4,
        "m.py:outer": 7,
        "m.py:outer.inner": 2,
        "m.py:outer.hidden": 2,
    }


def test_no_function_over_the_ceiling_outside_the_debt_list():
    too_long = {
        name: n for name, n in package_function_lengths().items() if n > CEILING and name not in LONG_FUNCTIONS_DEBT
    }
    assert too_long == {}, f"split these functions into named steps (ceiling {CEILING} lines): {too_long}"


def test_the_debt_list_only_shrinks():
    lengths = package_function_lengths()
    paid = {name: lengths.get(name) for name in LONG_FUNCTIONS_DEBT if lengths.get(name, 0) <= CEILING}
    assert paid == {}, f"no longer over {CEILING} lines (or gone): delete from LONG_FUNCTIONS_DEBT: {paid}"
