"""The package's layers point one way, no module imports a private name of another package, and
the top of the package holds only what every layer shares (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ..helpers import REPO

SRC = REPO / "src" / "mgmrn"

# lowest first; a unit may import its own layer's units and those below, never above
LAYERS = [
    {"errors", "choices"},
    {"io"},
    {"models", "evaluation"},
    {"config", "hub"},
    {"distributed"},
    {"data"},
    {"precision", "checkpoint"},
    {"viz"},
    {"inference"},
    {"training", "export"},
    {"serve"},
    {"commands"},
    {"cli"},
    {"mgmrn", "__main__"},
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}
TOP_MODULES = 10


def unit_of(module: str) -> str:
    """``mgmrn.inference.loaded`` -> ``inference``; ``mgmrn.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mgmrn"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, imported names) of every import in a file, function-level ones too."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def mgmrn_imports(path: Path):
    for module, names in imports(path):
        if module == "mgmrn":  # `from mgmrn import checkpoint` names a module
            for name in names:
                if name != "__version__":  # the package's version, a constant of its root
                    yield f"mgmrn.{name}", []
        elif module.startswith("mgmrn."):
            yield module, names


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    units = {"mgmrn" if u == "__init__" else u for u in units}
    assert units <= set(RANK), f"give these a layer: {sorted(units - set(RANK))}"


def test_layers_point_one_way():
    upward = []
    for path in SRC.rglob("*.py"):
        own = unit_of(module_name(path))
        for module, _ in mgmrn_imports(path):
            target = unit_of(module)
            if RANK[target] > RANK[own]:
                upward.append(f"{module_name(path)} imports {module}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("folder", ["src", "benchmarks", "scripts"])
def test_no_private_name_of_another_package_is_imported(folder):
    found = []
    for path in (REPO / folder).rglob("*.py"):
        own = module_name(path) if folder == "src" else ""
        for module, names in mgmrn_imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            hidden = [part for part in module.split(".") if part.startswith("_")]
            other_package = unit_of(module) != unit_of(own) if own else True
            if other_package and (private or hidden):
                found.append(f"{path.relative_to(REPO)}: {module} {private}")
    assert not found, "\n".join(found)


def test_the_top_of_the_package_holds_at_most_ten_modules():
    modules = [p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(modules) <= TOP_MODULES, sorted(modules)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The layer check itself: an import from models up into data is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mgmrn.data import build_data\n")
    found = [module for module, _ in mgmrn_imports(bad)]
    assert found == ["mgmrn.data"] and RANK[unit_of(found[0])] > RANK["models"]
