"""The apps depend one way: ``tunnelsite`` <- ``accounts`` <- ``tunnels``.

Checked on the source (every ``import``, also inside functions), so a new
upward import fails here rather than as a circular import some day.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Packages each layer must not import.
FORBIDDEN = {"tunnelsite": ("accounts", "tunnels"), "accounts": ("tunnels",)}
# The root URLconf mounts every app's urls: it is where the layers are put together.
COMPOSITION_ROOT = {"tunnelsite/urls.py"}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("package", FORBIDDEN)
def test_lower_layers_do_not_import_higher_ones(package):
    upward = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources(package)
        if str(path.relative_to(ROOT)) not in COMPOSITION_ROOT
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    }
    assert upward == set()


def test_the_check_sees_imports():
    # Guards the walker itself: the tunnels app does import accounts.
    assert any(module.startswith("accounts") for path in sources("tunnels") for module in imported_modules(path))
