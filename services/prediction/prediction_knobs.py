"""prediction's knobs (TRADING_PREDICTION_*), read once at start.

The signal combiner's weights and thresholds are a group: each field of
`services.domain.signals.SignalConfig` is TRADING_PREDICTION_SIGNAL_<FIELD>, and a variable under
that prefix naming no field is refused (a typo must not pass silently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob
from services.domain import features
from services.domain.buy_rate import BuyRateConfig
from services.domain.signals import SignalConfig


@dataclass(frozen=True, slots=True)
class PredictionKnobs:
    service: ClassVar[str] = "prediction"

    dependency_timeout_s: float = knob(
        4.0, low=0.05, high=600, doc="each call to market-data, sentiment, ml-model"
    )
    # The platform client's default timeout is 10 s: answer within it unless told otherwise.
    timeout_s: float = knob(10.0, low=0.5, high=3600, doc="a request's deadline when the caller gives none")
    concurrency: int = knob(16, low=1, high=1024, doc="predictions made at once")
    degrade: bool = knob(
        True,
        doc="sentiment or ml-model unavailable or too slow: a degraded prediction (true), or fail it"
        " with -32001 naming it (false: a replay, whose decisions must not depend on the machine's speed)",
    )
    history_days: int = knob(
        features.MIN_BARS + 10, low=features.MIN_BARS, high=20_000, doc="daily bars asked for the features"
    )
    index_ttl_s: float = knob(
        60.0, low=0.0, high=86_400, doc="the market index's history is reused this long"
    )
    reuse_s: float = knob(
        300.0,
        low=0.0,
        high=86_400,
        doc="a forced prediction reuses the last one made this recently on the same market data and"
        " sentiment (nothing stored or published again); 0: always compute afresh",
    )
    degraded_cache_s: float = knob(
        60.0,
        low=0.0,
        high=86_400,
        doc="a degraded prediction is answered from the cache at most this long (suite seconds), then made"
        " again (what it missed may be back); a complete one until new market data",
    )
    refresh_while_closed: bool = knob(
        True,
        doc="re-predict on market_data_updated while the market is closed (true), or only in the session"
        " (false: a replay, where a closed market's predictions are never traded and the next session's"
        " first quote predicts anyway)",
    )
    buy_rate_window: int = knob(50, low=1, high=100_000, doc="the BUY share is over this many predictions")
    buy_rate_threshold: float = knob(
        0.70, low=0.0, high=0.999, doc="buy_rate_alert when the BUY share crosses it"
    )
    buy_rate_min_samples: int = knob(10, low=1, high=100_000, doc="no alert on fewer predictions")
    signal: SignalConfig = knob(SignalConfig, strict=True, doc="weights and thresholds of the combiner")

    def __post_init__(self) -> None:
        _ = self.buy_rate  # its checks (min_samples within the window, ...) run when the knobs are read

    @property
    def buy_rate(self) -> BuyRateConfig:
        return BuyRateConfig(
            window_size=self.buy_rate_window,
            threshold=self.buy_rate_threshold,
            min_samples=self.buy_rate_min_samples,
        )
