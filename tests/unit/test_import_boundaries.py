"""No service imports another service's modules; what two of them share has one owner.

The rule, per package under services/ (checked on the source: every import statement, including
ones inside functions, relative imports resolved, and importlib.import_module("...") calls):

- a module of services/<pkg>/ (a service, management, or the framework in base/) may import
  services.base, services.domain, services.registry and its own package, nothing else of services;
- services/clients/ holds the outside world's HTTP clients that several services use (IG Markets:
  paper-trading trades through it, market-data prices through it): every service and management may
  import it, like services.base; it imports only services.base, services.domain and itself (no
  service, no registry), and the framework in base/ does not import it (clients sit on top of base);
- one exception, stated here: management owns set-up, and services/management/databases.py opens
  each service's store to create its schema, so it alone may import those store modules
  (STORE_MODULES, with the knobs the paper-trading ledger is created with) and nothing else of
  another service;
- services/domain/ is pure and shared by all: it imports only services.domain and the registry
  (pure data that imports nothing of the suite; no framework, no service; tests/unit/test_domain_purity.py checks it does no I/O);
- a module at the top of services/ (the import-root bootstrap, the registry) imports only
  services.domain and itself.

Pure parsing shared by two services lives in services/domain/ (price_history: Yahoo CSV text and
the synthetic walk; day_plan: the default trading day), stores live next to their service.

Every module is imported by its qualified name (services.market_data.providers), so the old rule
that module names must be unique across services (tests/conftest.py put every service folder on
sys.path and imported modules by bare name) is no longer needed: the tests at the end check that
nothing imports a service module by a bare name and that no service folder is on sys.path.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"
SHARED = frozenset({"base", "domain", "registry"})
# Outside-world clients: shared by the services, above the framework.
CLIENTS = "clients"
CLIENTS_MAY_IMPORT = frozenset({"base", "domain", CLIENTS})
DATABASE_SET_UP = SERVICES / "management" / "databases.py"
STORE_MODULES = frozenset(
    {
        "services.sentiment.sentiment_store",
        "services.ml_model.ml_prediction_log",
        "services.prediction.prediction_store",
        "services.scheduler.task_store",
        "services.paper_trading.trade_store",
        # the ledger is created with the service's starting capital, read by the service's knobs
        "services.paper_trading.paper_trading_knobs",
    }
)


def source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts and ".venv" not in p.parts)


SERVICE_FILES = source_files(SERVICES)


def module_name(path: Path) -> str:
    """services/market-data/providers.py -> services.market_data.providers (hyphens as imported)."""
    parts = [p.replace("-", "_") for p in path.relative_to(REPO).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, fully qualified target) of every import in the file; `from m import n` gives m.n."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    text = path.read_text(encoding="utf-8") if source is None else source
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def owner(path: Path) -> str:
    """The package a file belongs to: its folder under services/ (as imported), or for a module at
    the top of services/, the module itself."""
    return module_name(path).split(".")[1] if module_name(path) != "services" else "services"


def allowed(path: Path, target: str) -> bool:
    parts = target.split(".")
    if parts[0] != "services" or len(parts) == 1:
        return True  # not ours (stdlib, third party), or the import root itself
    own, package = owner(path), parts[1]
    if own == "domain":
        return package in ("domain", "registry")
    if path.parent == SERVICES:
        return package in ("domain", own)
    if own == CLIENTS:
        return package in CLIENTS_MAY_IMPORT
    if package == CLIENTS:
        return own != "base"
    if package in SHARED or package == own:
        return True
    return path == DATABASE_SET_UP and any(target == m or target.startswith(m + ".") for m in STORE_MODULES)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=lambda p: str(p.relative_to(SERVICES)))
def test_no_service_imports_another_services_modules(path):
    bad = [f"line {line}: {target}" for line, target in imported(path) if not allowed(path, target)]
    assert not bad, f"{path.relative_to(REPO)} imports another package's modules: {bad}"


@pytest.mark.parametrize(
    ("file", "target", "ok"),
    [
        ("services/ml-model/train_models.py", "services.market_data.providers.CsvSource", False),
        ("services/management/replay.py", "services.scheduler.scheduler_service.default_tasks", False),
        ("services/ml-model/train_models.py", "services.domain.price_history.csv_file_name", True),
        ("services/ml-model/train_models.py", "services.ml_model.model_store.write_manifest", True),
        ("services/scheduler/scheduler_service.py", "services.registry.SERVICES", True),
        ("services/base/events.py", "services.registry.EVENTS", True),
        ("services/base/events.py", "services.market_data.providers", False),
        # from services import market_data: the package of another service is its modules too
        ("services/prediction/prediction_service.py", "services.market_data", False),
        ("services/management/databases.py", "services.scheduler.task_store.TaskStore", True),
        # the set-up exception is for stores only, and for set-up only
        ("services/management/databases.py", "services.scheduler.scheduler_service", False),
        ("services/management/replay.py", "services.scheduler.task_store.TaskStore", False),
        ("services/domain/schedule.py", "services.domain.asx_calendar", True),
        ("services/domain/schedule.py", "services.base.clock", False),
        # the registry is pure data that imports nothing of the suite: domain may read it
        ("services/domain/supervision.py", "services.registry.SERVICES", True),
        ("services/domain/supervision.py", "services.base.events", False),
        ("services/__init__.py", "services.market_data", False),
        # services/clients: every service may use the shared outside-world clients ...
        ("services/market-data/market_data_service.py", "services.clients.ig_client.IgClient", True),
        ("services/paper-trading/paper_trading_service.py", "services.clients.ig_client", True),
        ("services/management/replay.py", "services.clients.ig_prices", True),
        # ... which build on the framework and the pure domain only: no service, no registry
        ("services/clients/ig_prices.py", "services.clients.ig_client.IgClient", True),
        ("services/clients/ig_prices.py", "services.domain.intraday.Quote", True),
        ("services/clients/ig_client.py", "services.base.config.ConfigError", True),
        ("services/clients/ig_client.py", "services.paper_trading.trade_store", False),
        ("services/clients/ig_prices.py", "services.market_data.providers", False),
        ("services/clients/ig_prices.py", "services.registry.SERVICES", False),
        # the framework sits below the clients, the pure domain and the import root apart from them
        ("services/base/base_service.py", "services.clients.ig_client", False),
        ("services/domain/intraday.py", "services.clients.ig_client", False),
        ("services/__init__.py", "services.clients", False),
    ],
)
def test_the_rule_itself(file, target, ok):
    assert allowed(REPO / file, target) is ok


def test_relative_and_dynamic_imports_are_resolved():
    source = (
        "from . import model_store\n"
        "from .model_store import X\n"
        "from ..market_data import providers\n"
        "def late():\n"
        "    import importlib\n"
        "    importlib.import_module('services.scheduler.scheduler_service')\n"
    )
    assert [t for _, t in imported(SERVICES / "ml-model" / "example.py", source)] == [
        "services.ml_model.model_store",
        "services.ml_model.model_store.X",
        "services.market_data.providers",
        "importlib",
        "services.scheduler.scheduler_service",
    ]


def module_stems() -> set[str]:
    return {p.stem for p in SERVICE_FILES if p.parent != SERVICES and p.name != "__init__.py"}


def is_ours(name: str) -> bool:
    """A bare name that can only mean a module of services/: it resolves to nothing else."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return True
    return spec is None or (spec.origin is not None and Path(spec.origin).is_relative_to(SERVICES))


@pytest.mark.parametrize(
    "path",
    [*SERVICE_FILES, *source_files(REPO / "tests"), *sorted(REPO.glob("*.py"))],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_nothing_imports_a_service_module_by_a_bare_name(path):
    stems = module_stems()
    bare = [
        f"line {line}: {target}"
        for line, target in imported(path)
        if target.split(".")[0] in stems and is_ours(target.split(".")[0])
    ]
    assert not bare, f"{path.relative_to(REPO)} imports by bare name (use services.<pkg>.<module>): {bare}"


def test_a_bare_name_is_caught_and_a_library_of_the_same_name_is_not():
    source = "from providers import CsvSource\nimport task_store\nimport os.path\n"
    found = [t for _, t in imported(REPO / "tests" / "example.py", source)]
    assert [t for t in found if t.split(".")[0] in module_stems() and is_ours(t.split(".")[0])] == [
        "providers.CsvSource",
        "task_store",
    ]
    # Were a service to add a module named like the stdlib's (say signal.py), `import signal`
    # would still mean the library.
    assert is_ours("providers") and not is_ours("signal")


def test_no_service_folder_is_on_the_import_path():
    folders = {p.parent.resolve() for p in SERVICE_FILES if p.parent != SERVICES}
    on_path = [p for p in sys.path if p and Path(p).resolve() in folders]
    assert not on_path, f"service folders on sys.path make bare-name imports work again: {on_path}"
