"""Create every service's SQLite database with its schema (`setup_microservices.py --init-db`).

It runs the very store classes the services open at start, so the schema has one definition.
Each store creates its tables idempotently; running this twice changes nothing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services.base.config import Settings, get_settings  # noqa: E402


def _plain(folder: str, module: str, cls: str, filename: str) -> Callable[[Settings], object]:
    def open_store(settings: Settings):
        sys.path.insert(0, str(REPO / "services" / folder))
        return getattr(importlib.import_module(module), cls)(settings.data_dir / filename)

    return open_store


def _paper_trading(settings: Settings):
    from decimal import Decimal

    from services.base.clock import get_clock

    sys.path.insert(0, str(REPO / "services" / "paper-trading"))
    from trade_store import TradeStore

    capital = Decimal(str(settings.env_float("TRADING_PAPER_TRADING_STARTING_CAPITAL", 100000.0, low=1.0)))
    return TradeStore(settings.data_dir / "paper_trading.db", capital, get_clock().now())


DATABASES: dict[str, Callable[[Settings], object]] = {
    "sentiment.db": _plain("sentiment", "sentiment_service", "SentimentReadingStore", "sentiment.db"),
    "ml_model.db": _plain("ml-model", "ml_prediction_log", "PredictionLog", "ml_model.db"),
    "predictions.db": _plain("prediction", "prediction_store", "PredictionStore", "predictions.db"),
    "scheduler.db": _plain("scheduler", "task_store", "TaskStore", "scheduler.db"),
    "paper_trading.db": _paper_trading,
}


def main() -> int:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for filename, open_store in DATABASES.items():
        store = open_store(settings)
        store.close()
        print(f"[setup] database ready: {settings.data_dir / filename}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
