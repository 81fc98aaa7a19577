"""The alerts process's knobs (TRADING_ALERTS_*), read once at start.

The channels' own variables (URLs, tokens, the SMTP server) are not knobs: they may come from the
secrets file too (services/clients/alert_channels/config.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from typing import ClassVar

from services.base.knobs import knob
from services.domain.alert_incidents import QuietHours, parse_min_severity, parse_quiet_hours, parse_routes


def _clock_time(text: str) -> time | None:
    text = text.strip()
    if text.lower() in ("", "off", "none"):
        return None
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not HH:MM (or off)") from None


@dataclass(frozen=True, slots=True)
class AlertsKnobs:
    service: ClassVar[str] = "alerts"

    group_window_s: float = knob(
        300.0, low=1, high=86400, doc="repeats of an open incident within this are one message with a count"
    )
    quiet_hours: QuietHours | None = knob(
        None, parse=parse_quiet_hours, doc="HH:MM-HH:MM Sydney time: non-critical alerts wait for the end"
    )
    rate_limit: int = knob(20, low=1, high=10_000, doc="messages per channel within the rate window")
    rate_window_s: float = knob(3600.0, low=1, high=86400 * 7, doc="the window of the rate limit")
    routes: Mapping[str, tuple[str, ...]] = knob(
        {}, parse=parse_routes, doc="KIND=CHANNEL+CHANNEL,...: kinds sent only to those channels"
    )
    min_severity: Mapping[str, str] = knob(
        {}, parse=parse_min_severity, doc="CHANNEL=SEVERITY,...: the least severity a channel takes"
    )
    send_attempts: int = knob(3, low=1, high=10, doc="tries of one send (retryable failures only)")
    retry_base_s: float = knob(1.0, low=0, high=60, doc="backoff after the first failed try; doubles")
    retry_max_s: float = knob(30.0, low=0, high=600, doc="cap of the backoff between tries")
    redeliver_s: float = knob(
        60.0, low=1, high=86400, doc="a send that failed is tried again this much later"
    )
    max_delivery_age_s: float = knob(86400.0, low=60, doc="... until the delivery is this old: then failed")
    http_timeout_s: float = knob(10.0, low=0.5, high=120, doc="one request to a channel")
    tick_s: float = knob(
        1.0, low=0.05, high=60, doc="real seconds between the loop's turns (due sends, windows)"
    )
    poll_s: float = knob(
        30.0, low=0.1, high=3600, doc="real seconds between polls of what events cannot tell"
    )
    disk_min_free_pct: float = knob(
        5.0, low=0, high=100, doc="free space below this on data or log fs: alert"
    )
    daily_summary_at: time | None = knob(
        time(16, 30), parse=_clock_time, doc="Sydney time of the daily summary on trading days (off: none)"
    )
    weekly_summary: bool = knob(
        True, doc="a weekly summary after the daily one of the week's last trading day"
    )
