"""The package's layers hold: no import cycle between modules, and no module importing from a layer above its own.

Every ``import revq_core...`` / ``from revq_core... import ...`` (and relative import) of every module under
``revq_core/`` counts, at module level or inside a function: a function-level import hides a cycle from the
interpreter but not from the reader. Layers, bottom to top (README, "Architecture"):

    utils < ops < autoencoders < modeling < data < training < evaluation < generation < paper < entry modules

``revq_core/__init__.py`` is utils-level; the entry modules are the command lines and glue at the top of
``revq_core/`` (``train.py``, ``evaluate.py``, ``tokenize_images.py``, ...). Modules of one layer may import
each other, without cycles.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "revq_core"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
LAYERS = ("utils", "ops", "autoencoders", "modeling", "data", "training", "evaluation", "generation", "paper",
          "entry")


def module_name(path: Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module: its subpackage, "utils" for the package itself, "entry" for a top-level module."""
    parts = module.split(".")
    if len(parts) == 1:
        return "utils"
    if (ROOT / parts[1]).is_dir():
        return parts[1]
    return "entry"


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """[(line, imported module)] of every revq_core import in ``path`` (``from a import b`` counts as ``a.b``
    when that is a module, else as ``a``)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package (or the package itself for an __init__)
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if submodule in modules else source))
    return sorted({(line, target) for line, target in found if target != module})


def import_graph() -> dict[str, list[tuple[int, str]]]:
    modules = package_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def relative(module: str) -> str:
    return str(package_modules()[module].relative_to(ROOT.parent))


def test_no_import_goes_up_a_layer():
    graph = import_graph()
    problems = [f"{relative(module)}:{line} imports {target}: {layer_of(target)} is a layer above {layer_of(module)}"
                for module, edges in graph.items() for line, target in edges
                if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))]
    assert not problems, (f"imports from a layer above the importer's own (layers, bottom to top: "
                          f"{' < '.join(LAYERS)}):\n" + "\n".join(problems))


def test_no_import_cycle():
    graph = import_graph()
    cycles, done = [], set()

    def visit(module: str, path: list[str], edges: list[tuple[str, int, str]]) -> None:
        """Depth first; ``edges`` are the imports (module, line, target) that led from path[0] to ``module``."""
        for line, target in graph.get(module, []):
            step = (module, line, target)
            if target in path:  # back to a module on the way here: a cycle
                cycle = edges[path.index(target):] + [step]
                cycles.append(" -> ".join(f"{relative(name)}:{at} imports {to}" for name, at, to in cycle))
            elif target not in done:
                visit(target, path + [target], edges + [step])
        done.add(module)

    for module in graph:
        if module not in done:
            visit(module, [module], [])
    assert not cycles, "import cycles (no module may import one that imports it back):\n" + "\n".join(cycles)
