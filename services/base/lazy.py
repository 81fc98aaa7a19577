"""A package's public names, imported from their modules when first used (PEP 562).

`from services.base import BaseService` imports services.base.base_service (and asyncio with it)
at that moment; a process that needs only the light modules (`service_manager.py start` reads its
settings and launches the supervisor before it imports the rest) pays for those alone. A package
lists its names with their modules (HOMES), in `__all__`, and in `if TYPE_CHECKING:` imports for
the type checker: tests/unit/test_base_exports.py holds the three equal.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, whose public names live in the modules
    of `homes` (module path relative to the package -> names). A name is imported on its first use
    and kept in the package's namespace; an unknown one is an AttributeError, as for any module."""
    where = {name: f"{package}.{module}" for module, names in homes.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        home = where.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
