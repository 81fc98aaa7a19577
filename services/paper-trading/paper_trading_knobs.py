"""paper-trading's knobs (TRADING_PAPER_TRADING_*), read once at start.

Its own module, light to import, because set-up (services.management.databases) creates the
ledger with the same starting capital the service opens it with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from services.base.knobs import knob
from services.clients.ig_epics import parse_epic_overrides
from services.domain import risk


@dataclass(frozen=True, slots=True)
class PaperTradingKnobs:
    service: ClassVar[str] = "paper-trading"

    # Money knobs are Decimal; the _PCT ones are percentages, as the rules are stated ("5%").
    starting_capital: Decimal = knob(Decimal(100_000), low=1, high=1e12, doc="cash of a new book (AUD)")
    slippage_bps: Decimal = knob(Decimal(5), low=0, high=1000, doc="fills move this much against the trader")
    position_size_pct: Decimal = knob(
        Decimal(5), low=0.01, high=100, doc="largest trade, % of portfolio value"
    )
    max_position_value: Decimal = knob(
        Decimal(10_000), low=1, high=1e9, doc="cap per symbol after a trade (AUD)"
    )
    max_exposure_pct: Decimal = knob(
        Decimal(80), low=0.01, high=100, doc="positions value cap, % of portfolio"
    )
    max_daily_loss: Decimal = knob(
        Decimal(5_000), low=1, high=1e9, doc="the day's loss that halts new buys until the next day (AUD)"
    )
    commission_fixed: Decimal = knob(Decimal(10), low=0, high=1e6, doc="commission per trade (AUD)")
    commission_pct: Decimal = knob(Decimal("0.1"), low=0, high=50, doc="commission, % of trade value")
    stop_loss_pct: Decimal = knob(Decimal(5), low=0.01, high=100, doc="close a position this % below cost")
    take_profit_pct: Decimal = knob(
        Decimal(10), low=0.01, high=10_000, doc="close a position this % above cost"
    )
    follow_signals: bool = knob(True, doc="act on prediction_generated (BUY opens or adds, SELL closes)")
    verify_predictions: bool = knob(
        True,
        doc="before acting on prediction_generated, ask the prediction service that the prediction"
        " exists with that symbol and signal (an event on the bus is not trusted by its id alone)",
    )
    signal_max_age_s: float = knob(3600.0, low=1.0, high=1e7, doc="an older prediction is not acted on")
    quote_timeout_s: float = knob(10.0, low=0.1, high=300.0, doc="wait for market-data's price")
    max_quote_age_s: float = knob(
        1500.0, low=1.0, high=1e7, doc="an order refuses a quote older than this (its own time to now)"
    )
    exit_check_s: float = knob(
        30.0, low=0.1, high=86_400.0, doc="suite seconds between timed stop/take-profit checks"
    )
    market_data_silent_s: float = knob(
        300.0,
        low=1.0,
        high=86_400.0,
        doc="in the session, no usable quote for a held symbol (or none at all) for this long halts new buys",
    )
    ig_mirror: bool = knob(False, doc="mirror paper trades to the IG demo account")
    ig_epics: Mapping[str, str] = knob(
        {}, parse=parse_epic_overrides, doc="SYMBOL=EPIC,... over the default epic of each symbol"
    )

    def risk_rules(self) -> risk.RiskRules:
        """The risk gate's rules (fractions where the knobs say percent)."""
        return risk.RiskRules(
            position_size_fraction=self.position_size_pct / 100,
            max_position_value=self.max_position_value,
            max_exposure_fraction=self.max_exposure_pct / 100,
            max_daily_loss=self.max_daily_loss,
            commission_fixed=self.commission_fixed,
            commission_rate=self.commission_pct / 100,
            stop_loss_fraction=self.stop_loss_pct / 100,
            take_profit_fraction=self.take_profit_pct / 100,
        )
