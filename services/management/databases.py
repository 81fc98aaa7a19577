"""Create every service's SQLite database with its schema (`setup_microservices.py --init-db`).

It runs the very store classes the services open at start, so the schema has one definition.
Each store creates its tables idempotently; running this twice changes nothing. Management owns
set-up, so it is the one place that opens other services' stores.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from services.base.clock import get_clock
from services.base.config import Settings, get_settings


def _sentiment(settings: Settings):
    from services.sentiment.sentiment_store import SentimentReadingStore

    return SentimentReadingStore(settings.data_dir / "sentiment.db")


def _ml_model(settings: Settings):
    from services.ml_model.ml_prediction_log import PredictionLog

    return PredictionLog(settings.data_dir / "ml_model.db")


def _prediction(settings: Settings):
    from services.prediction.prediction_store import PredictionStore

    return PredictionStore(settings.data_dir / "predictions.db")


def _scheduler(settings: Settings):
    from services.scheduler.task_store import TaskStore

    return TaskStore(settings.data_dir / "scheduler.db")


def _paper_trading(settings: Settings):
    from services.base.knobs import read_knobs
    from services.paper_trading.paper_trading_knobs import PaperTradingKnobs
    from services.paper_trading.trade_store import TradeStore

    # The service's own knob, so set-up and the service open the ledger with the same capital.
    capital = read_knobs(PaperTradingKnobs, settings.environ).starting_capital
    return TradeStore(settings.data_dir / "paper_trading.db", capital, get_clock().now())


DATABASES: dict[str, Callable[[Settings], object]] = {
    "sentiment.db": _sentiment,
    "ml_model.db": _ml_model,
    "predictions.db": _prediction,
    "scheduler.db": _scheduler,
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
