"""Create every service's SQLite database with its schema (`setup_microservices.py --init-db`).

The databases and their stores come from the registry (services.registry): each store class is
the very one its service opens at start, so the schema has one definition. Each store creates its
tables idempotently; running this twice changes nothing. Management owns set-up, so it is the one
place that opens other services' stores.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Protocol

from services.base import Settings, get_clock, get_settings
from services.registry import Database, databases


def _trade_store_args(settings: Settings) -> tuple:
    # The ledger records its starting capital when it is created, with the service's own knob,
    # so set-up and the service open the ledger with the same capital.
    from services.base.knobs import read_knobs
    from services.paper_trading.paper_trading_knobs import PaperTradingKnobs

    return (read_knobs(PaperTradingKnobs, settings.environ).starting_capital, get_clock().now())


class Store(Protocol):
    def close(self) -> None: ...


#: Stores that take more than the database's path: their extra constructor arguments.
EXTRA_ARGS: dict[str, Callable[[Settings], tuple]] = {
    "services.paper_trading.trade_store:TradeStore": _trade_store_args,
}


def store_class(database: Database) -> type:
    """The class named by the registry's "module:Class"."""
    return getattr(importlib.import_module(database.module), database.class_name)


def open_store(database: Database, settings: Settings) -> Store:
    extra = EXTRA_ARGS.get(database.store, lambda _settings: ())(settings)
    return store_class(database)(settings.data_dir / database.file, *extra)


def main() -> int:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for _service, database in databases():
        store = open_store(database, settings)
        store.close()
        print(f"[setup] database ready: {settings.data_dir / database.file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
