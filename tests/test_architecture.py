"""The package's shape (issue "One house"): no import cycle between modules, and no module imports another
subpackage's private module. Read from the source with ``ast``, so the test does not depend on import order."""
import ast
from pathlib import Path

import captum_layerpair

ROOT = Path(captum_layerpair.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["captum_layerpair", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import of the package in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, id(node) in top_level) for n in names if n.startswith("captum_layerpair")]
    return sorted(set(found))


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _existing(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_module_imports_another_subpackages_private_module():
    bad = []
    for module, path in MODULES.items():
        for imported, _ in _imports(path, module):
            target = _existing(imported)
            if target is None:
                continue
            parts = target.split(".")
            # a private module inside a subpackage: captum_layerpair.<sub>._x
            if len(parts) >= 3 and parts[-1].startswith("_") and parts[-1] != "__init__":
                owner = ".".join(parts[:-1])
                if not (module == owner or module.startswith(owner + ".")):
                    bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_module_level_imports_have_no_cycle():
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for imported, top in _imports(path, module):
            target = _existing(imported)
            if top and target and target != module and not (MODULES[target].name == "__init__.py"
                                                              and module.startswith(target + ".")):
                graph[module].add(target)
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "active"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "active" and MODULES[nxt].name != "__init__.py":
                cycle.append(" -> ".join([*stack, node, nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycle, "\n".join(cycle)
