"""services.base.rpc is a package of modules behind the public names rpc.py had (and RpcKnobs)."""

from __future__ import annotations

import importlib
from pathlib import Path

# Every public name of the single-module rpc.py, where each now lives.
HOME = {
    "errors": [
        "ERROR_TYPES", "RpcError", "ParseError", "InvalidRequest", "MethodNotFound", "InvalidParams",
        "InternalError", "ServiceError", "DependencyUnavailable", "NotConfigured", "RiskRejected",
        "MarketClosed", "RpcTimeout", "NotFound", "StorageUnavailable", "error_from_wire",
    ],
    "params": ["rpc", "coerce", "ParamSpec", "MethodSpec"],
    "codec": ["dumps", "loads", "error_response", "result_response", "check_request", "request_id_of"],
    "server": ["Dispatcher", "RpcServer"],
    "limits": ["RpcKnobs"],
    "client": ["ConnectionLost", "RpcClient"],
}  # fmt: skip


def test_the_package_re_exports_every_public_name_from_its_module():
    # import_module, not `from services.base import rpc`: that name is the decorator.
    package = importlib.import_module("services.base.rpc")
    for module_name, names in HOME.items():
        module = importlib.import_module(f"services.base.rpc.{module_name}")
        for name in names:
            assert getattr(package, name) is getattr(module, name), f"{module_name}.{name}"
    assert sorted(package.__all__) == sorted(n for names in HOME.values() for n in names)


def test_the_pure_modules_import_no_io():
    """errors, params and codec stay pure: the server and client are the only socket code."""
    for module_name in ("errors", "params", "codec"):
        text = Path(importlib.import_module(f"services.base.rpc.{module_name}").__file__).read_text()
        for io in ("import asyncio", "import socket", "import os"):
            assert io not in text, f"{module_name} does {io}"
