"""services.base exports the framework's public names, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

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
