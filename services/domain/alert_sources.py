"""What the alerts process watches, turned into occurrences (services.domain.alert_incidents).

Pure: events' data and polls' readings in, occurrences out; summaries' figures in, text out.
Event types that other parts of the suite add later (`storage_halted` ...) are mapped here by
name already; the alerts process follows each one as soon as the registry has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from services.domain.alert_incidents import Occurrence

#: Event types the router maps; the alerts process has an @on_event handler for each (a test checks).
FOLLOWED_EVENTS = (
    "service_status_changed",
    "buy_rate_alert",
    "risk_limit_hit",
    "task_failed",
    "event_dead_lettered",
    "storage_halted",
    "storage_resumed",
    "ig_mirror_halted",
    "ig_mirror_resumed",
    "outbox_backlog",
    "market_data_stale",
)
#: The alerts process's own name: an event about it cannot reach it when it matters.
ALERTS = "alerts"


def _text(data: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if value not in (None, ""):
            return " ".join(str(value).split())[:500]
    return ""


def occurrences_from_event(event_type: str, source: str, data: Mapping[str, Any]) -> list[Occurrence]:
    """The occurrences one event stands for (none for an event that is no alert)."""
    if event_type == "service_status_changed":
        return _service_status(data)
    if event_type == "buy_rate_alert":
        rate, threshold = data.get("rate"), data.get("threshold")
        figures = (
            f"{rate:.0%} of the last {data.get('window', '?')} predictions are BUY (alert above {threshold:.0%})"
            if isinstance(rate, int | float) and isinstance(threshold, int | float)
            else "the BUY share of recent predictions crossed its threshold"
        )
        return [Occurrence("buy_rate_alert", "prediction", "Buy-rate alert", figures)]
    if event_type == "risk_limit_hit":
        rule = _text(data, "rule") or "risk rule"
        detail = _text(data, "detail")
        if data.get("halted_until"):
            until = _text(data, "halted_until")
            return [
                Occurrence(
                    "trading_halted",
                    "paper-trading",
                    "Trading halted: new buys stopped",
                    f"{detail} (until {until})",
                )
            ]
        symbol = _text(data, "symbol")
        return [Occurrence("risk_limit_hit", rule, f"Risk limit hit: {rule}", f"{symbol} {detail}".strip())]
    if event_type == "task_failed":
        name = _text(data, "name") or "?"
        status = _text(data, "status") or "failed"
        return [Occurrence("task_failed", name, f"Task {name} {status}", _text(data, "error"))]
    if event_type == "event_dead_lettered":
        kind = _text(data, "event_type") or "?"
        consumer = _text(data, "consumer") or source
        return [
            Occurrence(
                "event_dead_lettered",
                f"{kind}/{consumer}",
                f"Event {kind} dead-lettered by {consumer}",
                f"{_text(data, 'error')} (entry {_text(data, 'entry_id')} in {_text(data, 'dead_letter_stream')})",
            )
        ]
    if event_type in ("storage_halted", "storage_resumed"):
        resolve = event_type == "storage_resumed"
        title = "Ledger storage failed: trading halted"
        return [
            Occurrence("storage_halted", source, title, _text(data, "reason", "error", "detail"), resolve)
        ]
    if event_type in ("ig_mirror_halted", "ig_mirror_resumed"):
        resolve = event_type == "ig_mirror_resumed"
        title = "IG mirror halted"
        return [
            Occurrence("ig_mirror_halted", source, title, _text(data, "reason", "error", "detail"), resolve)
        ]
    if event_type == "outbox_backlog":
        resolve = data.get("state") == "cleared"
        size = data.get("size", data.get("outbox", data.get("backlog")))
        text = f"{size} unsent" if size is not None else _text(data, "detail", "reason")
        return [Occurrence("outbox_backlog", source, f"{source}: outbox growing", text, resolve)]
    if event_type == "market_data_stale":
        resolve = data.get("state") == "fresh"
        subject = _text(data, "symbol") or source
        text = _text(data, "reason", "stale_reason", "detail")
        return [Occurrence("market_data_stale", subject, f"Market data stale: {subject}", text, resolve)]
    return []


def _service_status(data: Mapping[str, Any]) -> list[Occurrence]:
    service = _text(data, "service") or "?"
    state = data.get("state")
    reason = _text(data, "reason")
    if state == "fatal":
        return [Occurrence("service_fatal", service, f"{service} is fatal: no more restarts", reason)]
    if state == "backoff":
        return [Occurrence("service_restarting", service, f"{service} restarting", reason)]
    if state == "running":
        return [Occurrence("service_fatal", service, "", "running again", resolve=True)]
    if state == "stopped":
        return [Occurrence("service_fatal", service, "", "stopped by the operator", resolve=True)]
    return []


# ---- polls ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiskReading:
    label: str  # "data", "logs"
    path: str
    free_bytes: int
    total_bytes: int

    @property
    def free_pct(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 100.0


def disk_occurrence(reading: DiskReading, min_free_pct: float) -> Occurrence:
    """Open (below the bound) or resolve (above it) the disk_low incident of one filesystem."""
    free_mb = reading.free_bytes / 1e6
    text = (
        f"{reading.free_pct:.1f}% free ({free_mb:,.0f} MB) on {reading.path}; the bound is {min_free_pct:g}%"
    )
    return Occurrence(
        "disk_low",
        reading.label,
        f"Disk nearly full: the {reading.label} filesystem",
        text,
        resolve=reading.free_pct >= min_free_pct,
    )


def models_expired(manifest: Mapping[str, Any], now: datetime) -> str | None:
    """Why the models are expired, when the manifest says so (`expired`, or an `expires_at` that
    has passed); None when it does not."""
    if manifest.get("expired") is True:
        return _text(manifest, "expired_reason") or "the manifest marks the models expired"
    expires = manifest.get("expires_at")
    if isinstance(expires, str):
        try:
            at = datetime.fromisoformat(expires)
        except ValueError:
            return None
        if at.tzinfo is not None and at <= now:
            return f"the models expired at {expires}"
    return None


def stale_market_data(health: Mapping[str, Any]) -> dict[str, str]:
    """symbol -> why, for the symbols market-data's health calls stale (its `stale_quotes`)."""
    stale = health.get("stale_quotes")
    if isinstance(stale, Mapping):
        return {str(s): _text(stale, s) or "served stale" for s in sorted(stale, key=str)}
    if isinstance(stale, list | tuple):
        return {str(s): "served stale" for s in sorted(stale, key=str)}
    return {}


# ---- summaries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryFigures:
    period: str  # "day" or "week"
    first_day: date
    last_day: date
    equity: float | None
    pnl: float | None  # the day's P&L, or the week's equity change
    trades: int | None
    signals: Mapping[str, int]  # BUY/SELL/HOLD -> predictions in the period
    failures: Mapping[str, int]  # alert kind -> incidents opened in the period
    missing: tuple[str, ...] = ()  # what could not be read (a service down)
    #: The signals are counted from the latest predictions only (prediction's list is capped).
    signals_capped_at: int | None = None


def count_signals(
    predictions: list[Mapping[str, Any]], first_day: date, last_day: date, tz, cap: int
) -> tuple[dict[str, int], int | None]:
    """Signals by kind among `predictions` (newest first, at most `cap` of them) made on Sydney
    days first_day..last_day; and `cap` when the list may not hold the whole period (it is full
    and its oldest is inside the period), else None. Malformed rows are skipped."""
    signals: dict[str, int] = {}
    days: list[date] = []
    for prediction in predictions:
        try:
            day = datetime.fromisoformat(str(prediction["created_at"])).astimezone(tz).date()
        except (KeyError, ValueError, TypeError):
            continue
        days.append(day)
        if first_day <= day <= last_day:
            signal = str(prediction.get("signal"))
            signals[signal] = signals.get(signal, 0) + 1
    capped = cap if len(predictions) >= cap and days and min(days) >= first_day else None
    return signals, capped


def money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "-" if value < 0 else ("+" if value > 0 and signed else "")
    return f"{sign}${abs(value):,.2f}"


def summary_text(figures: SummaryFigures) -> tuple[str, str]:
    """(title, text) of the daily or weekly summary."""
    if figures.period == "day":
        title = f"Daily summary {figures.last_day.isoformat()}"
        pnl_label = "day P&L"
    else:
        title = f"Weekly summary {figures.first_day.isoformat()} to {figures.last_day.isoformat()}"
        pnl_label = "week P&L"
    signals = ", ".join(f"{k} {figures.signals.get(k, 0)}" for k in ("BUY", "SELL", "HOLD"))
    failures = ", ".join(f"{k} {n}" for k, n in figures.failures.items()) or "none"
    lines = [
        f"equity {money(figures.equity)}",
        f"{pnl_label} {money(figures.pnl, signed=True)}",
        f"trades {figures.trades if figures.trades is not None else 'n/a'}",
        f"signals {signals} ({sum(figures.signals.values())} predictions"
        + (
            f"; counted in the latest {figures.signals_capped_at} only)" if figures.signals_capped_at else ")"
        ),
        f"failures {failures}",
    ]
    if figures.missing:
        lines.append(f"not available: {', '.join(figures.missing)}")
    return title, "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SummaryDue:
    kind: str  # daily_summary, weekly_summary
    subject: str  # the day (YYYY-MM-DD) or the ISO week (YYYY-Www)
    period: str  # day, week
    first_day: date
    last_day: date


def summaries_due(
    local_now: datetime, daily_at: time | None, weekly: bool, is_trading_day, next_trading_day
) -> list[SummaryDue]:
    """The summaries of today that are due at `local_now` (Sydney): the daily one on a trading day
    from `daily_at`, and on the week's last trading day the weekly one too. The caller drops those
    already sent; a day that is over is not caught up (its figures are gone by then)."""
    today = local_now.date()
    if daily_at is None or not is_trading_day(today) or local_now.time() < daily_at:
        return []
    due = [SummaryDue("daily_summary", today.isoformat(), "day", today, today)]
    year, week, _ = today.isocalendar()
    if weekly and next_trading_day(today).isocalendar()[:2] != (year, week):
        monday = date.fromisocalendar(year, week, 1)
        due.append(SummaryDue("weekly_summary", f"{year}-W{week:02d}", "week", monday, today))
    return due
