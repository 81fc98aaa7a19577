"""The in-process replay engine: the service replay's trading days, in one process, without the suite.

    service_manager.py replay --from 2019-06-03 --to 2019-06-28 --engine inproc [--data-dir DIR] [--out DIR]

The service replay (services/management/replay.py) drives a private suite of real processes:
per replayed day RPC, pub/sub, durable streams and SQLite commits, ~600-1,000 days a minute. This
engine replays the same days by calling the same pure functions those services call, in the
order the service replay's steps make them happen, with no RPC, Redis or SQLite:

- market-data: the CSV files cleaned once (bars.clean_daily_rows), the bars visible at each step
  (what price_history.visible_history gives, trimmed to TRADING_MARKET_DATA_HISTORY_BARS), the quote of
  daily bars (intraday_history.daily_bar_quote, kept in a quote_book.QuoteBook), the price on its
  basis (quote_book.price_view), technicals (indicators.technical_summary), the index's market
  context (market_context.classify_market) and data quality (data_quality.assess_quality);
- sentiment: a replay has no news (MarketAux is never configured in one): the neutral fallback,
  score 0 and confidence 0 (sentiment's `result_of` without a reading);
- ml-model: the same model files (hash-checked, base.model_store) evaluated in their inference
  form (base.model_inference), voted by model_voting.ensemble_vote and stated as its reply
  states them (model_voting.ensemble_reply_numbers);
- prediction: features.build_latest_features, the replies read by prediction_inputs.read_inputs,
  signals.decide with TRADING_PREDICTION_SIGNAL_*;
- paper-trading: every fill through risk.order_for_signal / risk.check_order / risk.commission
  and Portfolio.apply, at market_orders.order_fill's price; exits by market_orders.exit_for on
  each quote (the open's at 10:15, the day's final bar at 16:15), refused quotes by
  market_orders.refusal; the daily-loss halt by risk.daily_loss_hit against the day's first
  equity.

What a service replay's day does, and so what this engine does (daily bars only):
  10:15  D's open is quoted: each symbol's quote event marks it and checks its exits (sorted
         symbols, as market-data announces them); then each symbol's prediction on that quote
         (sorted, the order prediction saves and sends them), each acted on in turn: HOLD is
         nothing, BUY and SELL go through the risk gate after every held position was marked
         at its quote and its exits checked. The monitoring task's forced batch is answered
         with those same predictions (the prediction service reuses them: same inputs), so it
         adds none.
  16:15  D's bar is final: each symbol's quote (D's close, the session as its bar) marks it and
         checks the stop-loss and take-profit on the bar's range; the day's equity is read.
The day opens (risk.TradingDay) on the equity before D's first price moved. A symbol without a
bar on D has no new quote: the monitoring task's batch predicts it on the last close, after the
others, and its stale quote fills nothing.

A prediction depends on the data and the models alone, never on the book: every day is predicted
first (predictions_of, split between forked worker processes), then the book follows the days.

Checked against the service replay: tests/system/test_fast_replay.py runs both on the same
period and requires the same trades (symbol, side, quantity, price, commission, slippage, P&L,
reason, step) to the cent, the same equity curve and the same report. Not covered (refused with ReplayError): intraday CSVs (the
service replay steps those sessions bar by bar). Not modelled because a replay cannot reach it:
restarts and redeliveries (one process, nothing is lost), the market-data silence halt (every
symbol with a bar today is quoted at 10:15), a second BUY on the same quote (one prediction a
symbol a session).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.base import Settings
from services.base.knobs import SUITE_KNOBS, ConfigError, read_knobs
from services.base.model_inference import InferenceFormError, InferenceModel, read_cached
from services.base.model_sets import serving_dir
from services.base.model_store import ModelStoreError, load_manifest, verify_model_file
from services.domain import asx_calendar, data_quality, features, indicators, market_context, risk
from services.domain.bars import Bar, CleaningReport, clean_daily_rows, last_visible_date
from services.domain.intraday import NoIntradayData, Quote, asx_close_time
from services.domain.intraday_history import daily_bar_quote
from services.domain.market_orders import MarketQuote, exit_for, order_fill, priced_before, refusal
from services.domain.model_voting import ensemble_reply_numbers, ensemble_vote
from services.domain.portfolio import Action, Fill, Portfolio, to_decimal, to_money, trade_value, value
from services.domain.prediction_inputs import Gathered, read_inputs
from services.domain.price_history import History, close_summary, csv_file_name, parse_yahoo_csv
from services.domain.quote_book import QuoteBook, price_view
from services.domain.signals import SENTIMENT_FALLBACK_SOURCE, decide
from services.management.replay import (
    MARK_AT,
    TRADE_AT,
    ReplayError,
    ReplayOptions,
    ReplayRecord,
    ReplayResult,
    at,
    check_data,
    intraday_plan,
    models_trained_before,
    replay_days,
    replay_result,
    suite_env,
    train_models,
)

# A worker predicts at least this many days: fewer are not worth a process.
MIN_DAYS_A_WORKER = 20
SOURCE = "csv"  # market-data's source name for CSV files (its replies and quotes say it)
# sentiment's reply without news and without a reading: neutral, no confidence (a fallback).
NEUTRAL_SCORE = 0.0
NEUTRAL_SENTIMENT: dict[str, Any] = {
    "score": NEUTRAL_SCORE,
    "confidence": 0.0,
    "source": SENTIMENT_FALLBACK_SOURCE,
}


def suite_knobs(name: str, env: dict[str, str]) -> Any:
    """A service's knob dataclass (found by name in SUITE_KNOBS, as `all_knobs` finds it: no
    service module is imported by name), read from the replay suite's environment."""
    for path in SUITE_KNOBS:
        module, _, cls = path.partition(":")
        if cls == name:
            return read_knobs(getattr(importlib.import_module(module), cls), env)
    raise LookupError(f"no knob class {name} in SUITE_KNOBS")


@dataclass(frozen=True)
class Member:
    """One model of a symbol's ensemble, as ml-model serves it."""

    name: str
    roc_auc: float | None
    model: InferenceModel


def ensemble_members(folder: Path, symbols: tuple[str, ...]) -> dict[str, list[Member]]:
    """Each symbol's models in manifest order, hash-checked, in their cached inference form.

    Stricter than ml-model, which leaves a bad model out of the ensemble and votes without it:
    here any model that cannot serve stops the replay (its answer would differ from nothing)."""
    try:
        manifest = load_manifest(folder)
    except ModelStoreError as exc:
        raise ReplayError(f"models: {exc}") from None
    members: dict[str, list[Member]] = {}
    for symbol in symbols:
        entries = manifest.for_symbol(symbol)
        if not entries:
            raise ReplayError(f"models: none for {symbol} in {folder}")
        for entry in entries:
            if (
                entry.feature_names != features.FEATURE_NAMES
                or entry.feature_version != features.FEATURE_VERSION
            ):
                raise ReplayError(
                    f"models: {entry.model_name} for {symbol} was trained on feature version "
                    f"{entry.feature_version}; this code builds {features.FEATURE_VERSION}: retrain"
                )
            recorded = entry.raw.get("inference_sha256")
            try:
                verify_model_file(folder, entry.file, entry.sha256)
                model = read_cached(
                    folder,
                    entry.sha256,
                    len(features.FEATURE_NAMES),
                    recorded if isinstance(recorded, str) else None,
                )
            except (ModelStoreError, InferenceFormError) as exc:
                raise ReplayError(f"models: {entry.file}: {exc}") from None
            if model is None:
                raise ReplayError(
                    f"models: {entry.file} has no inference form (training writes them; the ml-model"
                    " service converts older sets: run a service replay once, or retrain)"
                )
            members.setdefault(symbol, []).append(
                Member(entry.model_name, entry.metrics.get("roc_auc"), model)
            )
    return members


@dataclass
class Series:
    """A symbol's cleaned daily bars (as market-data's CSV source and quote source read them)."""

    bars: list[Bar]
    report: CleaningReport
    dates: list[date] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    volumes: list[float] = field(default_factory=list)  # as market-data's technicals take them

    def __post_init__(self) -> None:
        self.dates = [b.date for b in self.bars]
        self.closes = [b.close for b in self.bars]
        self.volumes = [float(b.volume) for b in self.bars]


def read_series(data_dir: Path, symbol: str) -> Series:
    path = data_dir / csv_file_name(symbol)
    text = path.read_bytes().decode("utf-8")
    bars, report = clean_daily_rows(parse_yahoo_csv(text, path.name), asx_calendar.is_trading_day)
    return Series(bars, report)


@dataclass
class Book:
    """paper-trading's state: the portfolio, its marks, how far each position's prices were
    checked for exits, the day's record, and the ledger's trades."""

    portfolio: Portfolio
    marks: dict[str, Decimal] = field(default_factory=dict)
    checked_to: dict[str, datetime] = field(default_factory=dict)
    day: date | None = None
    start_equity: Decimal = Decimal(0)
    halted: bool = False
    trades: list[dict] = field(default_factory=list)


class InprocReplay:
    """Replays `options` in this process (see the module docstring); run() -> ReplayResult."""

    def __init__(
        self,
        options: ReplayOptions,
        progress: Callable[[str], None] = lambda _m: None,
        workers: int | None = None,
    ):
        self.options = options
        self.progress = progress
        self.workers = max(1, workers or os.cpu_count() or 1)  # processes that predict
        self.days = replay_days(options.first, options.last)
        # The environment the service replay's suite runs with (its knobs, the replay's settings).
        self.env = suite_env(Path(tempfile.gettempdir()), options, dict(os.environ))
        self.settings = Settings.from_env(self.env)
        self.symbols = self.settings.symbols
        self.index = self.settings.market_index
        check_data(options.data_dir, self.symbols, self.index)
        self.plan = intraday_plan(options.data_dir, self.symbols, self.days)
        if self.plan.interval is not None:
            raise ReplayError(
                f"the in-process engine replays daily bars only; {options.data_dir} has"
                f" {self.plan.interval} intraday files for {', '.join(self.plan.symbols)}: use the"
                " service replay (the default engine)"
            )
        try:  # a bad setting would stop the service replay's suite from starting
            self.market_knobs = suite_knobs("MarketDataKnobs", self.env)
            self.prediction_knobs = suite_knobs("PredictionKnobs", self.env)
            self.trading_knobs = suite_knobs("PaperTradingKnobs", self.env)
        except ConfigError as exc:
            raise ReplayError(str(exc)) from None
        self.rules: risk.RiskRules = self.trading_knobs.risk_rules()
        self.notes: list[str] = []
        self.spans: dict[str, float] = {}
        self.quotes = QuoteBook()
        self.book = Book(Portfolio.new(self.trading_knobs.starting_capital))
        self.curve: list[tuple[date | None, float]] = []
        self.predictions: list[dict] = []
        self._histories: dict[tuple[str, date], tuple[History, list[float], list[float]]] = {}
        self._index_context: tuple[History, dict] | None = None
        self._wired: dict[str, tuple[Quote, MarketQuote]] = {}

    # ---- life

    def run(self) -> ReplayResult:
        started = time.monotonic()
        with self._models() as folder:
            self.members = ensemble_members(folder, self.symbols)
        self.series = {s: read_series(self.options.data_dir, s) for s in (*self.symbols, self.index)}
        self.curve.append((None, float(self._valuation().equity)))
        loop_started = time.monotonic()
        workers = min(self.workers, max(1, len(self.days) // MIN_DAYS_A_WORKER))
        with self._span(f"predictions 10:15 ({workers} process(es))"):
            predictions = self._all_predictions(workers)
        self._close(asx_calendar.previous_trading_day(self.days[0]))
        for number, (day, made) in enumerate(zip(self.days, predictions, strict=True), start=1):
            self._trading_day(day, made)
            self.progress(f"day {number}/{len(self.days)} {day}: equity {self.curve[-1][1]:,.2f}")
        loop_s = time.monotonic() - loop_started
        record = ReplayRecord(
            self.curve, self.book.trades, self.predictions, self.predictions, self.notes, self.spans
        )
        return replay_result(
            self.options, self.symbols, self.index, self.plan, self.days, record, started, loop_s
        )

    def _all_predictions(self, workers: int) -> list[list[dict]]:
        """Every day's predictions, in the order they are acted on. A prediction depends on the
        data and the models alone, never on the book, so the days are predicted first, split
        between `workers` processes (forked: they share the files and models read here), and the
        book then follows them day by day. The same predictions whatever the split."""
        count = len(self.days)
        if workers <= 1:
            return self.predictions_of(0, count)
        bounds = [(count * k // workers, count * (k + 1) // workers) for k in range(workers)]
        global _FORKED
        _FORKED = self
        try:
            # Forked, not spawned: nothing to pickle but the bounds and the predictions. The
            # workers only compute (no I/O, no lock another thread of this process could hold).
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.starmap(_predictions_in_worker, bounds)
        finally:
            _FORKED = None
        return [day for part in parts for day in part]

    def predictions_of(self, first: int, end: int) -> list[list[dict]]:
        """The predictions of days[first:end], each day's in the order paper-trading acts on them:
        on the open's quote (sorted, as its events come); then, as the monitoring task's batch
        forces them, those of the symbols without a quote today (no bar that day), made on the
        last close: their stale quote fills no order. Its own QuoteBook, taken through every
        refresh from the replay's start, holds the quotes market-data would hold then."""
        quotes = QuoteBook()
        self._record_quotes(quotes, at(asx_calendar.previous_trading_day(self.days[0]), MARK_AT))
        out = []
        for number, day in enumerate(self.days[:end]):
            opens = at(day, TRADE_AT)
            quoted = self._record_quotes(quotes, opens)
            if number >= first:
                made = [self._predict(symbol, opens, quotes) for symbol in sorted(quoted)]
                made += [self._predict(s, opens, quotes) for s in self.symbols if s not in quoted]
                out.append(made)
            self._record_quotes(quotes, at(day, MARK_AT))
        return out

    @contextlib.contextmanager
    def _models(self) -> Iterator[Path]:
        """The models the service replay would serve: --models-dir's when trained before --from,
        else trained now, as the service replay trains them (train_models)."""
        source = self.options.models_dir
        if source is not None and models_trained_before(source, self.options.first, self.symbols):
            self.notes.append(f"models reused from {source} (trained on labels ending before --from)")
            yield serving_dir(source)
            return
        self.progress(f"training models on data before {self.options.first} ...")
        folder = Path(tempfile.mkdtemp(prefix="rp-models-"))
        try:
            train_models(self.env, self.options, folder)
            self.notes.append(
                f"models trained for this replay on up to {self.options.train_years:g} year(s) before --from"
            )
            yield serving_dir(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def _span(self, name: str) -> Iterator[None]:
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - begun

    # ---- one day

    def _trading_day(self, day: date, made: list[dict]) -> None:
        """One replayed day, its predictions made already (predictions_of)."""
        opens = at(day, TRADE_AT)
        with self._span("open quotes 10:15"):
            self._quote_events(opens)
        with self._span("orders 10:15"):
            for prediction in made:
                self._act_on(prediction, opens)
            self._check_exits(opens)
        self.predictions.extend(sorted(made, key=lambda p: self.symbols.index(p["symbol"])))
        with self._span("close 16:15"):
            self._close(day)
            self.curve.append((day, float(self._valuation().equity)))

    def _close(self, day: date) -> None:
        """16:15: the day's bar is final; its quotes mark the book and check the exits on its range."""
        self._quote_events(at(day, MARK_AT))
        self._check_exits(at(day, MARK_AT))

    def _quote_events(self, now: datetime) -> dict[str, MarketQuote]:
        """market-data's quote refresh at `now` and its market_data_updated events (sorted) as
        paper-trading takes them: each moved quote marks its symbol, records the equity and
        checks the position's exits. Returns the quotes that moved, by symbol."""
        moved = {s: self._wire_quote(q) for s, q in self._record_quotes(self.quotes, now).items()}
        for symbol in sorted(moved):
            self._open_day(now)
            self.book.marks[symbol] = to_decimal(self._price(symbol, now))
            if self.book.portfolio.positions:  # with nothing held the equity is the cash: no loss
                self._snapshot(now)
                self._exit_if_due(moved[symbol], now)
        return moved

    def _record_quotes(self, quotes: QuoteBook, now: datetime) -> dict[str, Quote]:
        """market-data's quote refresh at `now` into `quotes`: the quotes that moved, by symbol."""
        moved: dict[str, Quote] = {}
        for symbol in self.symbols:
            series = self.series[symbol]
            try:
                quote = daily_bar_quote(symbol, series.bars, now, SOURCE, asx_close_time)
            except NoIntradayData as exc:
                quotes.failed(symbol, str(exc))
                continue
            if quotes.record(symbol, quote, now):
                moved[symbol] = quote
        return moved

    def _wire_quote(self, quote: Quote) -> MarketQuote:
        """The quote as paper-trading reads market-data's reply (kept while it is the same quote)."""
        kept = self._wired.get(quote.symbol)
        if kept is None or kept[0] is not quote:
            kept = (quote, MarketQuote.from_wire(quote.symbol, quote.to_dict()))
            self._wired[quote.symbol] = kept
        return kept[1]

    def _history(self, symbol: str, now: datetime) -> History:
        """market-data's cached history at `now`: its last history_bars visible bars and the
        cleaning report as of the last of them (price_history.visible_history of the file's bars,
        trimmed; the bars are sorted, so the visible ones are a prefix found by bisection)."""
        return self._window(symbol, now)[0]

    def _window(self, symbol: str, now: datetime) -> tuple[History, list[float], list[float]]:
        """_history, and its closes and volumes (sliced from the file's, not rebuilt each day)."""
        cutoff = last_visible_date(now)
        key = (symbol, cutoff)
        window = self._histories.get(key)
        if window is None:
            series = self.series[symbol]
            end = bisect_right(series.dates, cutoff)
            start = max(0, end - self.market_knobs.history_bars)
            history = History(symbol, SOURCE, tuple(series.bars[start:end]), series.report.until(cutoff))
            window = (history, series.closes[start:end], series.volumes[start:end])
            if len(self._histories) > 4 * len(self.series):
                self._histories.clear()
            self._histories[key] = window
        return window

    def _price(self, symbol: str, now: datetime) -> float:
        """The price market-data's reply and event give: the quote's in the session, else the close."""
        close = close_summary(self._history(symbol, now))
        return float(price_view(close, self.quotes.current(symbol, now), now)["price"])

    # ---- prediction

    def _context(self, now: datetime) -> dict:
        """The index's market context (market-data's, computed once per index history)."""
        history = self._history(self.index, now)
        if self._index_context is None or self._index_context[0] is not history:
            try:
                context: dict = market_context.classify_market(
                    self._window(self.index, now)[1], market_context.ContextParams()
                )
            except ValueError as exc:
                context = {"context": None, "error": f"market context unavailable: {exc}"}
            self._index_context = (history, context)
        return self._index_context[1]

    def _market(self, symbol: str, now: datetime, quotes: QuoteBook) -> tuple[dict, tuple[Bar, ...]]:
        """get_market_data's reply (the fields a prediction reads) and the bars it came from."""
        history, closes, volumes = self._window(symbol, now)
        bars = history.bars
        quote = quotes.current(symbol, now)
        close = close_summary(history)
        market = {
            **close,
            **price_view(close, quote, now),
            "technical": indicators.technical_summary(closes, volumes, self.market_knobs.technical),
            "market_context": self._context(now),
            "quality": data_quality.assess_quality(
                bars, now, asx_calendar.is_trading_day, history.cleaning, is_index=False
            ),
            "quote": quote.to_dict() if quote is not None else None,
        }
        return market, bars

    def _predict(self, symbol: str, now: datetime, quotes: QuoteBook) -> dict:
        market, bars = self._market(symbol, now, quotes)
        days = self.prediction_knobs.history_days
        g = Gathered(market=market, sentiment=dict(NEUTRAL_SENTIMENT))
        try:
            values = features.build_latest_features(
                bars[-days:], self._history(self.index, now).bars[-days:], NEUTRAL_SCORE
            )
        except ValueError as exc:
            g.missing["model"] = f"cannot build features: {exc}"
        else:
            g.ensemble, g.feature_values = self._ensemble(symbol, values), values
        inputs, missing = read_inputs(g)
        decision = decide(inputs, self.prediction_knobs.signal)
        for name in decision.missing:
            missing.setdefault(name, "market-data gave no usable reading")
        return {
            "prediction_id": uuid.uuid4().hex,
            "symbol": symbol,
            "signal": decision.signal,
            "confidence": round(decision.confidence, 6),
            "created_at": now.isoformat(),
            "degraded": bool(missing),
            "missing": missing,
            "inputs": {
                "market_data": {
                    "as_of": market["as_of"],
                    "date": market["date"],
                    "price_basis": market["price_basis"],
                    "quote_time": (market["quote"] or {}).get("quote_time"),
                },
                "model": g.ensemble,
            },
        }

    def _ensemble(self, symbol: str, values: dict[str, float]) -> dict:
        """get_ensemble_prediction's reply (what a prediction reads of it). The replay's model set
        never expires (the replay suite sets TRADING_ML_MODEL_MAX_AGE_DAYS=3650)."""
        row = features.validate_features(values)
        members = self.members[symbol]
        probability, _, _ = ensemble_vote(
            [m.model.probability_up(row) for m in members], [m.roc_auc for m in members]
        )
        direction, stated, confidence = ensemble_reply_numbers(probability)
        return {"direction": direction, "probability": stated, "confidence": confidence}

    # ---- paper-trading

    def _act_on(self, prediction: dict, now: datetime) -> None:
        """paper-trading's on_prediction (_act_on, then _execute), at the symbol's current quote."""
        signal = prediction["signal"]
        if signal == "HOLD" or not asx_calendar.is_market_open(now):
            return
        symbol = prediction["symbol"]
        current = self.quotes.current(symbol, now)
        if current is None:  # never quoted: paper-trading waits for market-data (not in a replay)
            raise ReplayError(f"{now:%Y-%m-%d %H:%M}: no quote for {symbol} to fill at")
        quote = self._wire_quote(current)
        self._mark(symbol, quote.price, now)
        if refusal(quote, now, self.trading_knobs.max_quote_age_s) is not None:
            return
        if priced_before(prediction["inputs"], quote) is not None:
            return
        for held in sorted(self.book.portfolio.positions):  # _book_at_quotes
            its = self._wire_quote(self._current(held, now)) if held != symbol else quote
            if held != symbol:
                self._mark(held, its.price, now)
            self._exit_if_due(its, now)
        side = Action.BUY if signal == "BUY" else Action.SELL
        price, _ = order_fill(side, quote, self.trading_knobs.slippage_bps)
        order = risk.order_for_signal(signal, symbol, price, self.book.portfolio, self.book.marks, self.rules)
        if order is None:
            return
        reason = f"signal {signal} (confidence {prediction['confidence']})"
        self._execute(symbol, side, order.quantity, price, quote, now, reason, prediction["prediction_id"])

    def _current(self, symbol: str, now: datetime) -> Quote:
        quote = self.quotes.current(symbol, now)
        if quote is None:
            raise ReplayError(f"{now:%Y-%m-%d %H:%M}: {symbol} is held but has no quote")
        return quote

    def _check_exits(self, now: datetime) -> None:
        """check_exits: each open position against its current quote (sorted)."""
        for symbol in sorted(self.book.portfolio.positions):
            quote = self.quotes.current(symbol, now)
            if quote is None:
                continue
            wire = self._wire_quote(quote)
            self._mark(symbol, wire.price, now)
            self._exit_if_due(wire, now)

    def _exit_if_due(self, quote: MarketQuote, now: datetime) -> None:
        symbol = quote.symbol
        position = self.book.portfolio.positions.get(symbol)
        if position is None:
            return
        checked_to = self.book.checked_to.setdefault(symbol, position.opened_at)
        check = exit_for(position, quote, self.rules, checked_to)
        if check.fill is None:
            if check.checked_to is not None:
                self.book.checked_to[symbol] = check.checked_to
            return
        if refusal(quote, now, self.trading_knobs.max_quote_age_s) is not None:
            return
        traded_at = check.bar.start if check.bar is not None else now
        if not asx_calendar.is_market_open(traded_at):
            return
        self._execute(
            symbol,
            Action.SELL,
            position.quantity,
            check.fill.price,
            quote,
            now,
            str(check.fill.reason),
            None,
            traded_at=traded_at,
        )

    def _execute(
        self,
        symbol: str,
        action: Action,
        quantity: int,
        price: Decimal,
        quote: MarketQuote,
        now: datetime,
        reason: str,
        prediction_id: str | None,
        *,
        traded_at: datetime | None = None,
    ) -> None:
        moment = traded_at or now
        order = risk.Order(symbol, action, quantity, price)
        rejection = risk.check_order(
            order,
            self.book.portfolio,
            self._prices(),
            self.rules,
            day=self._day_state(now),
            now=now,
            is_market_open=lambda _now: asx_calendar.is_market_open(moment),
        )
        if rejection is not None:
            return
        gross = trade_value(quantity, price)
        fill = Fill(symbol, action, quantity, price, risk.commission(gross, self.rules))
        result = self.book.portfolio.apply(fill, now)
        self.book.portfolio = result.portfolio
        self.book.trades.append(
            {
                "trade_id": len(self.book.trades) + 1,
                "timestamp": now.astimezone(UTC).isoformat(),
                "symbol": symbol,
                "action": str(action),
                "quantity": quantity,
                "price": float(price),
                "gross": float(fill.gross),
                "commission": float(fill.commission),
                "slippage": float(to_money(abs(price - quote.price) * quantity)),
                "realized_pnl": float(result.realized_pnl),
                "net_pnl": float(result.net_pnl),
                "prediction_id": prediction_id,
                "reason": reason,
                "closes_position": symbol not in result.portfolio.positions,
            }
        )
        if action is Action.BUY:
            self.book.checked_to[symbol] = quote.quote_time
        elif symbol not in result.portfolio.positions:
            self.book.checked_to.pop(symbol, None)
        self._snapshot(now)

    # ---- marks, days, equity

    def _mark(self, symbol: str, price: Decimal, now: datetime) -> None:
        self._open_day(now)  # the day starts from the equity before this price moved
        self.book.marks[symbol] = price

    def _prices(self) -> dict[str, Decimal]:
        book = self.book
        return {s: book.marks.get(s, p.avg_cost) for s, p in book.portfolio.positions.items()} | book.marks

    def _valuation(self) -> Any:
        return value(self.book.portfolio, self._prices())

    def _open_day(self, now: datetime) -> None:
        """A new day's record starts from the equity now (before the day's first price moved)."""
        today = asx_calendar.to_sydney(now).date()
        if self.book.day != today:
            self.book.day, self.book.start_equity, self.book.halted = today, self._valuation().equity, False

    def _day_state(self, now: datetime) -> risk.TradingDay:
        """Today's P&L against the equity first seen today, and whether the daily-loss halt tripped."""
        self._open_day(now)
        return risk.TradingDay(self._valuation().equity - self.book.start_equity, self.book.halted)

    def _snapshot(self, now: datetime) -> None:
        day = self._day_state(now)
        if not day.halted and risk.daily_loss_hit(day.day_pnl, self.rules):
            self.book.halted = True


_FORKED: InprocReplay | None = None  # the replay whose prediction workers are being forked


def _predictions_in_worker(first: int, end: int) -> list[list[dict]]:
    """In a forked worker: predictions_of of the replay that forked it."""
    assert _FORKED is not None, "a prediction worker runs only in a process forked by _all_predictions"
    return _FORKED.predictions_of(first, end)
