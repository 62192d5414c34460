"""Imports run downward only, and no module imports itself back through others.

The layers, top to bottom (a module may import its own layer and the layers below):

    cli -> commands -> reproduce -> training -> eval -> sampling -> runs
        -> memory | tasks -> data -> diffusion -> backbones -> core

Each layer but ``cli`` and ``core`` is a subpackage of ``memdlm``, so the tree shows the
chain. ``memory`` and ``tasks`` share a rank and import neither each other. ``core`` is
the modules directly in ``memdlm/`` (errors, validation, config, stats, outputs,
integrity). Every import counts, also the ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "memdlm"

# rank per top-level part (lower = higher up); modules directly in memdlm/ are "core"
RANKS = {"cli": 0, "commands": 1, "reproduce": 2, "training": 3, "eval": 4, "sampling": 5,
         "runs": 6, "memory": 7, "tasks": 7, "data": 8, "diffusion": 9, "backbones": 10}
CORE = 11

# Imports that go up or sideways, each with the reason it is still there (none at present).
ALLOWED: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """memdlm modules ``name`` imports (``from memdlm.data import words`` -> memdlm.data.words)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "memdlm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "memdlm":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found - {name}


def part(name: str) -> str:
    """``memdlm.memory.targets`` -> "memory"; ``memdlm.errors`` and ``memdlm`` -> "core"."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else "core"


def rank(name: str) -> int:
    return RANKS.get(part(name), CORE)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) & set(known) for name, path in known.items()}


def test_imports_run_downward():
    wrong = []
    for name, targets in graph().items():
        for target in targets:
            if (name, target) in ALLOWED:
                continue
            up = rank(target) < rank(name)
            sideways = rank(target) == rank(name) and part(target) != part(name)  # memory <-> tasks
            if up or sideways:
                wrong.append(f"{name} imports {target} ({part(name)} -> {part(target)})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_allow_list_is_still_needed():
    edges = {(name, target) for name, targets in graph().items() for target in targets}
    assert ALLOWED <= edges, f"no longer imported, drop from ALLOWED: {sorted(ALLOWED - edges)}"


def test_no_import_cycles():
    g = graph()
    cycles = [c for c in _strongly_connected(g) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def _strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (no recursion limit)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


def test_the_checker_sees_a_planted_upward_import_and_cycle():
    g = {"memdlm.data.x": {"memdlm.tasks.y"}, "memdlm.tasks.y": {"memdlm.data.x"}}
    assert [sorted(c) for c in _strongly_connected(g) if len(c) > 1] == [["memdlm.data.x", "memdlm.tasks.y"]]
    assert rank("memdlm.tasks.y") < rank("memdlm.data.x")  # data -> tasks goes up
    assert rank("memdlm.errors") == CORE and part("memdlm.memory.targets") == "memory"
    assert rank("memdlm.backbones.modeling") > rank("memdlm.diffusion.loss") > rank("memdlm.data.collate")
