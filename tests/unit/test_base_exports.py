"""services.base exports the framework's public names, and importing it stays light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import services.base
from services.base import rpc
from tests.support import REPO


def test_every_exported_name_resolves():
    for name in services.base.__all__:
        assert getattr(services.base, name) is not None, name


def test_rpc_is_the_decorator_and_the_package_still_imports():
    """`rpc` here is the decorator (it shadows the package's name); the package's names import."""
    from services.base.rpc import MethodSpec
    from services.base.rpc import rpc as rpc_from_package

    assert rpc is rpc_from_package and callable(rpc)
    assert MethodSpec.__module__ == "services.base.rpc.params"


def test_importing_services_base_pulls_in_nothing_heavy():
    """Redis and psutil load where first used; the data-science stack never (base runs everywhere)."""
    code = (
        "import sys; import services.base; "
        "heavy = ('pandas', 'numpy', 'sklearn', 'yfinance', 'redis', 'psutil', 'httpx', 'textual'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def type_checking_imports(package_file: Path) -> dict[str, set[str]]:
    """module -> names of the `if TYPE_CHECKING:` imports of a package's __init__.py."""
    found: dict[str, set[str]] = {}
    for node in ast.parse(package_file.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                found.setdefault(stmt.module, set()).update(alias.name for alias in stmt.names)
    return found


@pytest.mark.parametrize("package", ["services.base", "services.base.rpc"])
def test_the_lazy_names_their_modules_and_the_type_checkers_imports_agree(package: str):
    module = importlib.import_module(package)
    homes = {f"{package}.{home}": set(names) for home, names in module.HOMES.items()}
    assert type_checking_imports(Path(module.__file__)) == homes
    assert sorted(module.__all__) == sorted(n for names in homes.values() for n in names)
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        module.Nothing  # noqa: B018


def test_the_light_modules_import_without_asyncio_and_rpc_stays_the_decorator():
    """What `service_manager.py start` reads before it launches the supervisor (settings, knobs,
    the children's environment) loads no asyncio; and `rpc` is the decorator even when the rpc
    subpackage was imported first (the import system then sets the package's attribute to it)."""
    code = (
        "import sys\n"
        "import services.base.config, services.base.child_env, services.base.knobs, services.base.socket_dir\n"
        "import services.management.manager_knobs, services.management.daemon_boot\n"
        "light = 'asyncio' not in sys.modules\n"
        "import services.base.rpc.client\n"
        "from services.base import rpc, BaseService\n"
        "from services.base.rpc.params import rpc as decorator\n"
        "print(light, rpc is decorator, BaseService.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "services.base.base_service"]
