"""market-data with a stopwatch on its quote refreshes (bench_quotes.py runs it in place of the
service's entry file).

The real MarketDataService, unchanged, plus timing: each quote refresh (`_run_quote_refresh`, the
one run that the refresh loop, an on-demand `get_quote` and `refresh_all_data` share) records its
start on the wall clock, how long its quotes took (the source's fetch and the QuoteBook), how long
sending its `market_data_updated` events took, and those events' ids, so a subscriber can tell
which refresh an event came from. `bench_quote_refreshes` returns the records.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from services.base import Event, rpc, run_service
from services.market_data.market_data_service import MarketDataService, _held_events

# The record of the refresh running in this task (None outside a quote refresh).
_refresh: ContextVar[tuple[dict, float] | None] = ContextVar("bench_refresh", default=None)


class TimedMarketDataService(MarketDataService):
    async def on_start(self) -> None:
        self.bench_refreshes: list[dict] = []  # before the quote loop starts (in on_start)
        await super().on_start()

    async def _run_quote_refresh(self) -> set[str]:
        record: dict[str, Any] = {
            "start": time.time(),
            "suite_start": self.clock.now().isoformat(),
            # refresh_all_data holds the events back and sends one per symbol at its end
            "refresh_all_data": _held_events.get() is not None,
            "event_ids": [],
        }
        started = time.perf_counter()
        token = _refresh.set((record, started))  # this task's context only
        try:
            changed = await super()._run_quote_refresh()
            record["changed"] = len(changed)
            return changed
        finally:
            _refresh.reset(token)
            record["total_s"] = time.perf_counter() - started
            record.setdefault("quotes_s", record["total_s"])  # no event sent: all of it was quotes
            record["quotes"] = len(self._universe())
            self.bench_refreshes.append(record)

    async def publish(self, event_type: str, data: dict, durable: bool | None = None) -> Event:
        current = _refresh.get()
        if current is None or event_type != "market_data_updated":
            return await super().publish(event_type, data, durable)
        record, started = current
        record.setdefault("quotes_s", time.perf_counter() - started)  # the first event: quotes done
        event = await super().publish(event_type, data, durable)
        record["event_ids"].append(event.id)
        return event

    @rpc
    async def bench_quote_refreshes(self, since: int = 0) -> dict:
        """The timing records of the quote refreshes from the `since`-th on, oldest first."""
        return {"count": len(self.bench_refreshes), "refreshes": self.bench_refreshes[since:]}


if __name__ == "__main__":
    run_service(TimedMarketDataService)
