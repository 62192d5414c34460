"""No function in memdlm is longer than 60 lines.

What counts: every ``def`` (functions, methods, functions nested in functions, async ones) in
every ``.py`` file under ``src/memdlm``, measured from its ``def`` line to its last line
(``end_lineno - lineno + 1``, from ``ast``): the signature, the docstring, comments and blank
lines inside the body all count; decorators above the ``def`` do not. A nested function counts
both alone and as part of the function around it. A function that grows past the limit is split
into named steps (docs/ARCHITECTURE.md, house rules), not exempted: there is no allow-list.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "memdlm"
LIMIT = 60


def long_functions(source: str, module: str, limit: int = LIMIT) -> list[str]:
    """``module:qualified.name (N lines)`` of every function in ``source`` longer than ``limit``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lines = child.end_lineno - child.lineno + 1  # lineno is the def line, after decorators
                if lines > limit:
                    found.append(f"{module}:{name} ({lines} lines)")
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)  # defs under if / try / with at any depth

    visit(ast.parse(source), "")
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_checker_sees_a_function_one_line_past_the_limit():
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT - 2))  # def + docstring + 58 + return = 61
    planted = ("import functools\n\n\n@functools.cache\n@functools.wraps(print)\n"
               f'def planted():\n    """A docstring counts."""\n{body}    return 0\n')
    assert long_functions(planted, "m") == [f"m:planted ({LIMIT + 1} lines)"]
    # one line shorter passes: the limit is inclusive, and the two decorators did not count
    assert long_functions(planted.replace("    x0 = 0\n", ""), "m") == []
    # methods and nested functions are found under their qualified names
    method = "class A:\n    if True:\n        def f(self):\n            def g():\n" + "".join(
        f"                y{i} = {i}\n" for i in range(LIMIT)) + "            return g\n"
    assert long_functions(method, "m") == [f"m:A.f ({LIMIT + 3} lines)", f"m:A.f.g ({LIMIT + 1} lines)"]


def test_no_function_is_longer_than_the_limit():
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50  # the package was found
    found = [hit for path in paths for hit in long_functions(path.read_text(), module_name(path))]
    assert not found, f"functions over {LIMIT} lines (split them into named steps):\n" + "\n".join(found)
