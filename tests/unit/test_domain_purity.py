"""services/domain/ is pure logic: it imports nothing that does I/O or weighs a service down.

Checked on the source (every import statement, including ones inside functions), so a lazy
`import socket` deep in a helper is caught as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "services" / "domain"
FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "subprocess", "urllib", "http", "httpx", "redis", "requests",
    "shutil", "tempfile", "multiprocessing", "threading", "signal", "os", "psutil",
    "pandas", "numpy", "sklearn", "scipy", "yfinance", "joblib", "pickle",
    "services.base",
}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_module_imports_no_io(path):
    bad = {
        name for name in imported_modules(path)
        if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN or name.startswith("services.base")
    }  # fmt: skip
    assert not bad, f"{path.name} imports {sorted(bad)}"
