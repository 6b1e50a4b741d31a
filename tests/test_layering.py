"""The packages form layers, each importing only those below it: ``copa`` (the method) < ``baselines`` (models over
its skeleton) < ``zoo`` (every named model) < ``harness`` (running and measuring). The method stays usable, and
readable, without its baselines or the harness; a baseline or a user's plugin can be added without editing it.

Checked twice: statically (every ``import`` statement, at any depth, parsed with ``ast``) and at run time (importing
every module of a layer, and resolving its registry's locations, loads nothing from a layer above)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ('copa', 'baselines', 'zoo', 'harness')


def above(package: str) -> set[str]:
    return set(LAYERS[LAYERS.index(package) + 1:])


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob('*.py'))


def imported(path: Path) -> set[str]:
    """Top-level package of every import in ``path`` (relative ones resolved against its own package)."""
    here = path.relative_to(ROOT).parts[:-1]  # the package the module is in
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                names.add(base[0] if base else '<above the top level>')
            elif node.module:
                names.add(node.module.split('.')[0])
    return names


@pytest.mark.parametrize('package', LAYERS[:-1])
def test_no_upward_import(package):
    assert modules(package), f'no modules under {package}/'
    forbidden = above(package) | {'<above the top level>'}
    wrong = {str(path.relative_to(ROOT)): sorted(imported(path) & forbidden) for path in modules(package)}
    assert not {path: names for path, names in wrong.items() if names}


def test_imports_load_nothing_from_above():
    """Dynamic imports and registry ``locations`` count too: a layer's modules and its registry lookups, imported in
    a fresh interpreter, leave no module of a layer above in ``sys.modules``."""
    script = f"""
import importlib, sys
from pathlib import Path
root = Path({str(ROOT)!r})
for package in {list(LAYERS[:-1])!r}:
    for path in sorted((root / package).rglob('*.py')):
        parts = path.relative_to(root).with_suffix('').parts
        importlib.import_module('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))
    if package == 'copa':
        from copa.registry import MODELS
        MODELS.import_from_location()
    loaded = {{name.split('.')[0] for name in sys.modules}}
    above = set({list(LAYERS)!r}[{list(LAYERS)!r}.index(package) + 1:])
    assert not loaded & above, (package, sorted(loaded & above))
"""
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_zoo_registers_every_named_model():
    """Importing the zoo is what puts the baselines and the named models in the registry the harness builds from."""
    from copa.registry import MODELS
    from zoo import METHODS

    assert set(METHODS) <= set(MODELS.module_dict)
    assert {'CLSAttentionReducer', 'TextAttentionReducer', 'RandomReducer', 'ToMeReducer',
            'SingleStreamVLP'} <= set(MODELS.module_dict)
