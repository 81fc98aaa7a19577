"""The seed's default trading day: the tasks the scheduler seeds at start, as plain task configs.

Pure data (Sydney wall times, services and methods by name), parsed by
`services.domain.schedule.parse_task_config`. The scheduler seeds these tasks at start (unless
TRADING_SCHEDULER_DEFAULTS=false); the replay driver runs the refresh and monitoring tasks
itself, one step a day, so both follow the same plan.
"""

from __future__ import annotations


def default_tasks(symbols: tuple[str, ...]) -> list[dict]:
    """The seed's default schedule (Sydney time), as task configs."""
    return [
        {
            # Pre-market overview: index context and Big 4 news sentiment.
            "name": "morning_analysis",
            "calls": [
                {"service": "market-data", "method": "get_market_context"},
                {"service": "sentiment", "method": "get_big4_sentiment"},
            ],
            "schedule": _daily("09:30"),
            "catch_up_grace_s": 1800,  # still useful until the 10:00 open
        },
        {
            "name": "market_data_refresh",
            "service": "market-data",
            "method": "refresh_all_data",
            "schedule": _daily("09:45"),
            "catch_up_grace_s": 1800,
        },
        {
            "name": "sentiment_analysis",
            "service": "sentiment",
            "method": "refresh_sentiment_cache",
            "schedule": _daily("09:50"),
            "catch_up_grace_s": 1800,
        },
        {
            # Fresh data, then predictions (the paper trader follows prediction_generated).
            "name": "market_monitoring",
            "calls": [
                {"service": "market-data", "method": "refresh_all_data"},
                {
                    "service": "prediction",
                    "method": "generate_predictions",
                    # Forced: the day's new bar arrives before the open (09:45 refresh), so a cached
                    # prediction was made, and refused by the paper trader, while the market was
                    # closed. During the session no new daily bar arrives (bars appear at 16:10), so
                    # each run gives one fresh signal per symbol; the risk rules cap repeated buys.
                    "params": {"symbols": list(symbols), "force_refresh": True},
                },
            ],
            "schedule": {"type": "interval", "every_minutes": 15, "start": "10:15", "end": "close"},
            # If the morning refresh failed today, predictions would rest on stale data.
            "depends_on": ["market_data_refresh"],
            "timeout_s": 600,  # below the 15-minute interval, so runs never pile up
            "catch_up_grace_s": 300,  # a 15-minute monitoring slot is stale soon after
        },
        {
            # Post-market: the day's trading performance and the models' track record.
            "name": "evening_analysis",
            "calls": [
                {
                    "service": "paper-trading",
                    "method": "get_trading_performance",
                    "params": {"period": "day"},
                },
                {"service": "ml-model", "method": "get_model_performance"},
            ],
            "schedule": _daily("17:00"),
            "catch_up_grace_s": 7200,
        },
        {
            "name": "paper_trading_sync",
            "service": "paper-trading",
            "method": "sync_with_ig_markets",
            "schedule": _daily("17:30"),
            "catch_up_grace_s": 7200,
        },
        {
            "name": "daily_backup",
            "service": "scheduler",
            "method": "backup_databases",
            "schedule": _daily("02:00", days="all"),
            "timeout_s": 1800,
            "catch_up_grace_s": 86399,  # a missed nightly backup is always worth running once
        },
        {
            # A candidate set on the latest history (to the last completed session), promoted only
            # when the promotion rule holds (ml-model's model_promotion); the decision is the run's
            # result. Saturday morning: the week's sessions are all in, nothing trades.
            "name": "model_retrain",
            "service": "ml-model",
            "method": "retrain_models",
            "schedule": {"type": "cron", "cron": "0 6 * * 6", "days": "all"},
            "timeout_s": 3600,
            "retry": {"max_attempts": 2},  # Yahoo or the machine may be busy; once more is enough
            "catch_up_grace_s": 86400,  # a week's models are worth a late retrain
        },
    ]


def _daily(at: str, days: str = "trading") -> dict:
    return {"type": "daily", "at": at, "days": days}
