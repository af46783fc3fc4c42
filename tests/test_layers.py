"""The package map of ../shared/DESIGN.md: every import inside fmdepth runs down a layer.

Each ``import``/``from`` statement anywhere in a module (top level or inside a function) is
checked, so a lazy import that climbs a layer fails too.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fmdepth")

# first component under fmdepth/ -> layer (bottom = 0). Packages of one layer do not import each
# other; layer 0 is ordered inside (core's contract and checker < config, geometry) and so is the
# wiring layer 4 (tasks < inference < interop < commands < cli).
LAYERS = {
    "__init__": 0, "core": 0, "config": 0.5, "geometry": 0.5,
    "losses": 1, "networks": 1, "data": 1, "metrics": 1,
    "models": 2, "correspondence": 2, "registration": 2,
    "engine": 3,
    "tasks": 4.0, "inference": 4.1, "interop": 4.2, "commands": 4.3, "cli": 4.4, "__main__": 4.5,
}


def _unit(parts):
    """('data', 'kitti.py') -> 'data'; ('config.py',) -> 'config'."""
    return parts[0][:-3] if parts[0].endswith(".py") else parts[0]


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield path, os.path.relpath(path, ROOT).split(os.sep)


def _imports(path, parts):
    """Yield (line, imported fmdepth unit) for every fmdepth import in the module at ``path``."""
    package = ["fmdepth"] + parts[:-1]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [mod + "." + a.name for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "fmdepth":
                    names = ["fmdepth." + a.name for a in node.names]
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "fmdepth" and len(bits) > 1:
                yield node.lineno, bits[1]


def test_every_unit_has_a_layer():
    units = {_unit(parts) for _, parts in _modules()}
    assert units <= set(LAYERS), f"add to LAYERS (and DESIGN.md): {sorted(units - set(LAYERS))}"


def test_imports_run_down_the_layers_only():
    bad = []
    for path, parts in _modules():
        unit = _unit(parts)
        if unit == "__init__":  # fmdepth/__init__.py: version only
            continue
        for line, target in _imports(path, parts):
            if target == unit or target not in LAYERS:
                continue
            if LAYERS[target] >= LAYERS[unit] and target != "__init__":
                bad.append(f"fmdepth/{'/'.join(parts)}:{line} imports fmdepth.{target} "
                           f"(layer {LAYERS[target]}) from layer {LAYERS[unit]} ({unit})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    """The check above can fail: a function-level import of the engine from models is found."""
    pkg = tmp_path / "models"
    pkg.mkdir()
    mod = pkg / "x.py"
    mod.write_text("def f():\n    from fmdepth.engine.trainer import train\n    return train\n")
    found = list(_imports(str(mod), ["models", "x.py"]))
    assert found == [(2, "engine")]
    assert LAYERS["engine"] > LAYERS["models"]


@pytest.mark.parametrize("name", ["__init__.py"])
def test_relative_imports_resolve_inside_the_package(tmp_path, name):
    pkg = tmp_path / "losses"
    pkg.mkdir()
    mod = pkg / name
    mod.write_text("from ..models import depth\nfrom . import photometric\n")
    found = sorted(t for _, t in _imports(str(mod), ["losses", name]))
    assert found == ["losses", "models"]


def test_no_private_name_is_imported_from_another_module():
    """``from fmdepth.x import _y`` (or ``from .x import _y``) is refused; make the name public or move it."""
    bad = []
    for path, parts in _modules():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fmdepth")):
                for alias in node.names:
                    if alias.name.startswith("_") and alias.name != "__version__":
                        bad.append(f"fmdepth/{'/'.join(parts)}:{node.lineno} imports {alias.name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)
