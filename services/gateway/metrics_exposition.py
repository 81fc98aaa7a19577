"""The Prometheus text format (0.0.4) of one scrape of the desk: a pure function of the replies
the gateway collected (gateway_service.py asks; this only writes). Names follow Prometheus's
conventions: a `trading_` prefix, the unit in the name (`_bytes`, `_seconds`, `_aud`, `_ratio`),
`_total` on counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HEALTH_STATES = ("healthy", "degraded", "unhealthy", "starting", "stopping", "down")


@dataclass(slots=True)
class Scrape:
    """What the gateway gathered for one /metrics request; None (or missing) = did not answer."""

    services: tuple[str, ...]
    status: Mapping[str, Any] | None = None
    health: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)
    dead_letters: Mapping[str, int] | None = None
    portfolio: Mapping[str, Any] | None = None
    open_positions: int | None = None
    buy_rate: Mapping[str, Any] | None = None
    trades: int | None = None
    quote_age_s: Mapping[str, float] = field(default_factory=dict)
    scrape_s: float = 0.0


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Family:
    """One metric family: its HELP, TYPE and samples."""

    def __init__(self, name: str, kind: str, doc: str):
        self.name, self.kind, self.doc = name, kind, doc
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, value: float | None, suffix: str = "", **labels: str) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return  # unknown: no sample rather than a made-up number
        self.samples.append((suffix, labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.doc}"
        yield f"# TYPE {self.name} {self.kind}"
        for suffix, labels, value in self.samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            yield (
                f"{self.name}{suffix}{{{text}}} {_number(value)}"
                if text
                else f"{self.name}{suffix} {_number(value)}"
            )


def _num(mapping: Mapping[str, Any] | None, key: str) -> float | None:
    value = (mapping or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


#: The RPC server's counters (services/base/rpc/server.py COUNTERS) by the reason label they get.
RPC_CLOSED = {
    "peer_uid": "connections_refused",
    "over_limit": "connections_over_limit",
    "idle": "idle_closed",
}
RPC_FRAMES_REFUSED = {"too_big": "frames_too_big", "batch_too_big": "batches_too_big"}


def service_families(scrape: Scrape) -> list[Family]:
    up = Family(
        "trading_service_up", "gauge", "1 when the service runs and answers health (healthy or degraded)"
    )
    restarts = Family(
        "trading_service_restarts_total", "counter", "restarts by the supervisor since it started"
    )
    state = Family("trading_service_health_state", "gauge", "1 for the service's current health state")
    memory = Family("trading_service_memory_rss_bytes", "gauge", "resident memory of the service's process")
    cpu = Family(
        "trading_service_cpu_seconds_total", "counter", "CPU time (user + system) of the service's process"
    )
    requests = Family("trading_rpc_requests_total", "counter", "RPC requests served, per method")
    errors = Family("trading_rpc_errors_total", "counter", "RPC requests answered with an error, per method")
    latency = Family("trading_rpc_latency_seconds", "histogram", "RPC handling time per method, since start")
    published = Family("trading_events_published_total", "counter", "events the service published")
    received = Family("trading_events_received_total", "counter", "events the service received")
    dead = Family("trading_events_dead_lettered_total", "counter", "durable events the service dead-lettered")
    outbox = Family("trading_outbox_events", "gauge", "durable events saved but not yet sent to Redis")
    open_now = Family("trading_rpc_connections_open", "gauge", "RPC connections open now")
    accepted = Family("trading_rpc_connections_accepted_total", "counter", "RPC connections accepted")
    closed = Family(
        "trading_rpc_connections_refused_total",
        "counter",
        "RPC connections closed by the server's bounds, by reason (peer_uid, over_limit, idle)",
    )
    refused = Family(
        "trading_rpc_frames_refused_total",
        "counter",
        "RPC frames refused before they ran, by reason (too_big, batch_too_big)",
    )
    rows = {row["name"]: row for row in (scrape.status or {}).get("services", [])}
    for service in scrape.services:
        health = scrape.health.get(service)
        current = (health or {}).get("status") or "down"
        up.add(1 if current in ("healthy", "degraded") else 0, service=service)
        if service in rows:
            restarts.add(rows[service].get("restarts"), service=service)
        for name in HEALTH_STATES:
            state.add(1 if current == name else 0, service=service, state=name)
        memory.add(_num(health, "memory_usage"), service=service)
        cpu.add(scrape.cpu_seconds.get(service), service=service)
        reply = scrape.metrics.get(service)
        if not reply:
            continue
        for method, stats in sorted((reply.get("methods") or {}).items()):
            requests.add(stats["count"], service=service, method=method)
            errors.add(stats["errors"], service=service, method=method)
            histogram = stats.get("histogram")
            if histogram:
                for bound, count in zip(histogram["le_s"], histogram["counts"], strict=True):
                    le = "+Inf" if bound is None else repr(float(bound))
                    latency.add(count, "_bucket", service=service, method=method, le=le)
                latency.add(histogram["sum_s"], "_sum", service=service, method=method)
                latency.add(histogram["counts"][-1], "_count", service=service, method=method)
        rpc = reply.get("rpc") or {}
        open_now.add(_num(rpc, "connections_open"), service=service)
        accepted.add(_num(rpc, "connections_accepted"), service=service)
        for reason, key in RPC_CLOSED.items():
            closed.add(_num(rpc, key), service=service, reason=reason)
        for reason, key in RPC_FRAMES_REFUSED.items():
            refused.add(_num(rpc, key), service=service, reason=reason)
        events = reply.get("events") or {}
        published.add(_num(events, "published"), service=service)
        received.add(_num(events, "received"), service=service)
        dead.add(_num(events, "dead_lettered"), service=service)
        outbox.add(_num(events, "outbox"), service=service)
    return [
        up, restarts, state, memory, cpu, requests, errors, latency, published, received, dead, outbox,
        open_now, accepted, closed, refused,
    ]  # fmt: skip


def desk_families(scrape: Scrape) -> list[Family]:
    p = scrape.portfolio
    equity = Family("trading_desk_equity_aud", "gauge", "paper portfolio equity")
    equity.add(_num(p, "equity"))
    cash = Family("trading_desk_cash_aud", "gauge", "paper portfolio cash")
    cash.add(_num(p, "cash"))
    exposure = Family("trading_desk_exposure_ratio", "gauge", "positions value over equity (0..1)")
    pct = _num(p, "exposure_pct")
    exposure.add(None if pct is None else pct / 100.0)
    day_pnl = Family("trading_desk_day_pnl_aud", "gauge", "profit and loss of the current trading day")
    day_pnl.add(_num(p, "day_pnl"))
    halted = Family(
        "trading_desk_trading_halted", "gauge", "1 while trading is halted (a risk limit or the storage)"
    )
    halted.add(None if p is None else (1 if p.get("trading_halted") else 0))
    positions = Family("trading_desk_open_positions", "gauge", "open positions")
    positions.add(scrape.open_positions)
    rate = Family("trading_desk_buy_rate_ratio", "gauge", "share of BUY among the recent predictions (0..1)")
    rate.add(_num(scrape.buy_rate, "buy_rate"))
    predictions = Family("trading_desk_predictions_total", "counter", "stored predictions, by signal")
    for signal, count in sorted(
        ((scrape.health.get("prediction") or {}).get("predictions_by_signal") or {}).items()
    ):
        predictions.add(count, signal=signal)
    trades = Family("trading_desk_trades_total", "counter", "trades recorded in the paper ledger")
    trades.add(scrape.trades)
    quote_age = Family(
        "trading_desk_quote_age_seconds", "gauge", "age of the latest quote per symbol, by the suite clock"
    )
    for symbol, age in sorted(scrape.quote_age_s.items()):
        quote_age.add(age, symbol=symbol)
    dead = Family(
        "trading_dead_letter_events", "gauge", "entries in the dead-letter stream trading:dead:<type>"
    )
    for event_type, size in sorted((scrape.dead_letters or {}).items()):
        dead.add(size, event_type=event_type)
    took = Family("trading_gateway_scrape_seconds", "gauge", "time the gateway took to gather this scrape")
    took.add(scrape.scrape_s)
    return [
        equity,
        cash,
        exposure,
        day_pnl,
        halted,
        positions,
        rate,
        predictions,
        trades,
        quote_age,
        dead,
        took,
    ]


def exposition(scrape: Scrape) -> str:
    """The whole text, one family after another, ending with a newline."""
    lines = [
        line for family in (*service_families(scrape), *desk_families(scrape)) for line in family.lines()
    ]
    return "\n".join(lines) + "\n"
