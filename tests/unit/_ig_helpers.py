"""A local IG Markets stand-in speaking the documented REST formats (tests only).

It checks what IG checks (X-IG-API-KEY on every call, Version headers, CST and X-SECURITY-TOKEN
after login, POST /positions/otc body fields), answers errors as {"errorCode": ...} bodies with
IG's status codes, keeps positions per deal (each with its dealId and dealReference, as GET
/positions v2 shows them; a SELL without forceOpen nets against open BUYs of the epic, as CFD
accounts net: oldest first here, which IG's documents we have do not state), and can be scripted: expire the tokens, exhaust an allowance, reject
deals on an epic, delay confirms, and fault POST /positions/otc (`otc_faults`, one per request):
make the deal and drop the connection, drop it without the deal, answer only after a delay (the
deal made before or after it), answer 5xx before or after making the deal; lose a deal's confirm
(as IG forgets them after a while), fill only part of a deal, or confirm a deal it never books.

Prices: GET /markets/{epic} (Version 3) answers {instrument, dealingRules, snapshot} for the epics
in `state.markets` (each a snapshot, set with `market_snapshot()`), and GET /prices/{epic}
(Version 3, query resolution, max, pageSize, pageNumber) the points in `state.price_points`
(epic, resolution) -> list, made with `price_point()`, oldest first, with IG's metadata:
allowance (each point served is taken off `allowance_remaining`; at 0 IG's
exceeded-account-historical-data-allowance error), size and pageData (pageSize 0 = one page).

Where the shapes come from (nothing here is invented beyond the values):
- /markets/{epic} v3: shared/EXTERNAL-APIS.md, after trading-ig tests/data/markets_epic.json
  (snapshot: marketStatus, netChange, percentageChange, updateTime "HH:mm:ss", delayTime, bid,
  offer, high, low, binaryOdds, decimalPlacesFactor, scalingFactor, controlledRiskExtraSpread).
- /prices/{epic} v3: trading-ig tests/data/historic_prices_num_points.json (prices[{snapshotTime
  "yyyy/MM/dd HH:mm:ss" local, snapshotTimeUTC "yyyy-MM-ddTHH:mm:ss", openPrice/closePrice/
  highPrice/lowPrice {bid, ask, lastTraded}, lastTradedVolume}], instrumentType, metadata
  {allowance {remainingAllowance, totalAllowance, allowanceExpiry (s)}, size, pageData {pageSize,
  pageNumber, totalPages}}); the query parameters and their defaults (MINUTE, 10 points, pages of
  20, pageSize 0 = no paging) and the resolution names from IG's reference as transcribed in
  Fuuzetsu/ig-trading-rest (Prices/Epic/Get/Version3/Request.hs, Types/Resolution.hs), which
  trading-ig's rest.py (fetch_historical_prices_by_epic) sends the same way.
- An unknown epic: IG's code for it is not in the shared facts; the fake answers 404 with
  error.service.marketdata.instrument.epic.unavailable (the client treats any such code alike).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

API_KEY = "ig-test-key-8c2f41d0"
USERNAME = "demo-trader"
PASSWORD = "pw-Sup3r-s3cret!"
ACCOUNT_ID = "ABC123"

REQUIRED_OTC_FIELDS = ("currencyCode", "direction", "epic", "expiry", "forceOpen", "guaranteedStop", "size")
RESOLUTIONS = (
    "SECOND",
    "MINUTE",
    "MINUTE_2",
    "MINUTE_3",
    "MINUTE_5",
    "MINUTE_10",
    "MINUTE_15",
    "MINUTE_30",
    "HOUR",
    "HOUR_2",
    "HOUR_3",
    "HOUR_4",
    "DAY",
    "WEEK",
    "MONTH",
)
HISTORICAL_ALLOWANCE_EXCEEDED = "error.public-api.exceeded-account-historical-data-allowance"
# What `otc_faults` may hold, one per POST /positions/otc ("ok": answer normally).
OTC_FAULTS = (
    "ok",
    "drop_after_deal",  # make the deal, then close the connection without an answer
    "drop_before_deal",  # close the connection without making the deal
    "delay_after_deal",  # make the deal, answer after otc_delay_s
    "delay_before_deal",  # wait otc_delay_s, then make the deal and answer
    "500_before_deal",  # answer HTTP 500 without making the deal
    "500_after_deal",  # make the deal, answer HTTP 500
)
EPIC_UNAVAILABLE = "error.service.marketdata.instrument.epic.unavailable"
ACCOUNT_ZONE = ZoneInfo("Australia/Sydney")  # the demo account's local time (snapshotTime, updateTime)


def market_snapshot(
    *,
    bid: float | None = 100.0,
    offer: float | None = 100.02,
    high: float | None = 101.5,
    low: float | None = 99.2,
    net_change: float | None = 0.51,
    percentage_change: float | None = 0.51,
    update_time: str | None = "11:30:00",
    delay_time: int | None = 0,
    market_status: str = "TRADEABLE",
) -> dict[str, Any]:
    """A /markets/{epic} v3 `snapshot` (field names and kinds as trading-ig's markets_epic.json)."""
    return {
        "marketStatus": market_status,
        "netChange": net_change,
        "percentageChange": percentage_change,
        "updateTime": update_time,
        "delayTime": delay_time,
        "bid": bid,
        "offer": offer,
        "high": high,
        "low": low,
        "binaryOdds": None,
        "decimalPlacesFactor": 2,
        "scalingFactor": 1,
        "controlledRiskExtraSpread": 0,
    }


def price_point(
    start_utc: datetime,
    open_: float,
    high: float,
    low: float,
    close: float,
    *,
    volume: int | None = 1000,
    spread: float = 0.02,
    last_traded: float | None = None,
) -> dict[str, Any]:
    """One /prices v3 point: each price is mid -/+ spread/2 as {bid, ask, lastTraded}."""
    start_utc = start_utc.astimezone(UTC)

    def price(mid: float) -> dict[str, Any]:
        return {
            "bid": round(mid - spread / 2, 4),
            "ask": round(mid + spread / 2, 4),
            "lastTraded": last_traded,
        }

    return {
        "snapshotTime": start_utc.astimezone(ACCOUNT_ZONE).strftime("%Y/%m/%d %H:%M:%S"),
        "snapshotTimeUTC": start_utc.strftime("%Y-%m-%dT%H:%M:%S"),
        "openPrice": price(open_),
        "closePrice": price(close),
        "highPrice": price(high),
        "lowPrice": price(low),
        "lastTradedVolume": volume,
    }


@dataclass
class IgState:
    balance: float = 25_000.0
    tokens: set[tuple[str, str]] = field(default_factory=set)
    rate_limited: int = 0  # answer this many calls with an exceeded-allowance error
    login_rate_limited: int = 0  # answer this many logins with the API key's allowance exceeded
    server_errors: int = 0  # answer this many calls with HTTP 500
    reject_all_tokens: bool = False  # every token is invalid, even a fresh one
    confirm_not_ready: int = 0  # answer this many confirms with 404 deal-not-found
    reject_epics: dict[str, str] = field(default_factory=dict)  # epic -> reason
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)  # epic -> /markets snapshot
    price_points: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=dict
    )  # (epic, resolution) -> /prices points, oldest first
    allowance_remaining: int = 10_000  # historical data points left this week
    allowance_total: int = 10_000
    allowance_expiry_s: int = 565_788  # seconds to the weekly reset (trading-ig's fixture value)
    force_page_size: int | None = None  # page /prices answers at this size whatever was asked
    # Open positions, one per deal: {"dealId", "dealReference", "epic", "direction", "size", "level"}.
    deals: list[dict[str, Any]] = field(default_factory=list)
    confirms: dict[str, dict[str, Any]] = field(default_factory=dict)
    otc_faults: list[str] = field(default_factory=list)  # consumed one per POST /positions/otc
    otc_delay_s: float = 30.0  # how long the delay faults hold the answer (or the deal)
    lost_confirms: set[str] = field(default_factory=set)  # references whose confirm IG no longer has
    partial_fills: dict[str, float] = field(default_factory=dict)  # epic -> fraction of a BUY booked
    phantom_epics: set[str] = field(default_factory=set)  # BUYs confirmed ACCEPTED but never booked
    made: dict[str, int] = field(default_factory=dict)  # dealReference -> deals IG made under it
    lookup_errors: int = 0  # answer this many GET /confirms/... and GET /positions with HTTP 500
    requests: list[dict[str, Any]] = field(default_factory=list)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def hold(
        self,
        epic: str,
        size: float,
        direction: str = "BUY",
        *,
        level: float = 100.0,
        deal_id: str | None = None,
        deal_reference: str | None = None,
    ) -> dict[str, Any]:
        """Open a position at IG as if dealt outside this API's deals (a manual deal), or put one back."""
        with self.lock:
            n = next(self.counter)
            deal = {
                "dealId": deal_id or f"DIMANUAL{n}",
                "dealReference": deal_reference or f"MANUAL{n}",
                "epic": epic,
                "direction": direction,
                "size": size,
                "level": level,
            }
            self.deals.append(deal)
            return deal

    def drop(self, deal_id: str) -> dict[str, Any]:
        """Close one position at IG (as a stop, a margin call or a manual close would)."""
        with self.lock:
            deal = next(d for d in self.deals if d["dealId"] == deal_id)
            self.deals.remove(deal)
            return deal

    def sizes(self) -> dict[str, float]:
        """Net size per epic (BUY positive)."""
        with self.lock:
            net: dict[str, float] = {}
            for d in self.deals:
                net[d["epic"]] = net.get(d["epic"], 0.0) + (
                    d["size"] if d["direction"] == "BUY" else -d["size"]
                )
            return {epic: size for epic, size in net.items() if size}

    def with_reference(self, reference: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(d) for d in self.deals if d["dealReference"] == reference]

    def posted(self, reference: str) -> int:
        """How many POST /positions/otc carried this dealReference."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r["method"] == "POST"
                and r["path"] == "/positions/otc"
                and (r["body"] or {}).get("dealReference") == reference
            )


class FakeIg:
    """`with FakeIg() as ig:` then point the client at `ig.url`."""

    def __init__(self) -> None:
        self.state = IgState()
        state = self.state

        class Handler(_IgHandler):
            ig = state

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # a handler sleeping out a delay fault never blocks close
        # A short poll interval keeps shutdown() (once per test) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/gateway/deal"

    def __enter__(self) -> FakeIg:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.state.requests]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout against a delay fault) resets its connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _IgHandler(BaseHTTPRequestHandler):
    ig: IgState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        url = urlsplit(self.path)
        path = url.path.removeprefix("/gateway/deal")
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        fault = "ok"
        with self.ig.lock:
            self.ig.requests.append(
                {"method": method, "path": path, "query": query, "headers": dict(self.headers), "body": body}
            )
            if method == "POST" and path == "/positions/otc" and self.ig.otc_faults:
                fault = self.ig.otc_faults.pop(0)
        if fault == "delay_before_deal":
            time.sleep(self.ig.otc_delay_s)
        if fault in ("drop_before_deal", "500_before_deal"):
            status, payload, headers = 500, {"errorCode": "system.error"}, {}
        else:
            with self.ig.lock:
                status, payload, headers = self._route(method, path, body, query)
        if fault.startswith("drop_"):
            self.close_connection = True  # no answer at all: the client sees the connection close
            return
        if fault == "500_after_deal":
            status, payload, headers = 500, {"errorCode": "system.error"}, {}
        if fault == "delay_after_deal":
            time.sleep(self.ig.otc_delay_s)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for name, value in {
                **headers,
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
            }.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a delay fault)
            self.close_connection = True

    def _route(
        self, method: str, path: str, body: Any, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if self.headers.get("X-IG-API-KEY") is None:
            return 400, {"errorCode": "error.security.api-key-missing"}, {}
        if self.headers.get("X-IG-API-KEY") != API_KEY:
            return 403, {"errorCode": "error.security.api-key-invalid"}, {}
        if method == "POST" and path == "/session":
            if self.ig.login_rate_limited:
                self.ig.login_rate_limited -= 1
                return 403, {"errorCode": "error.public-api.exceeded-api-key-allowance"}, {}
            return self._login(body)
        tokens = (self.headers.get("CST"), self.headers.get("X-SECURITY-TOKEN"))
        if self.ig.reject_all_tokens or tokens not in self.ig.tokens:
            return 401, {"errorCode": "error.security.client-token-invalid"}, {}
        if self.ig.server_errors:
            self.ig.server_errors -= 1
            return 500, {"errorCode": "system.error"}, {}
        if (
            self.ig.lookup_errors
            and method == "GET"
            and (path == "/positions" or path.startswith("/confirms/"))
        ):
            self.ig.lookup_errors -= 1
            return 500, {"errorCode": "system.error"}, {}
        if self.ig.rate_limited:
            self.ig.rate_limited -= 1
            return 403, {"errorCode": "error.public-api.exceeded-account-trading-allowance"}, {}
        if method == "GET" and path == "/accounts":
            return 200, self._accounts(), {}
        if method == "GET" and path == "/positions":
            return self._positions()
        if method == "POST" and path == "/positions/otc":
            return self._open(body)
        if method == "GET" and path.startswith("/confirms/"):
            return self._confirm(path.removeprefix("/confirms/"))
        if method == "GET" and path.startswith("/markets/"):
            return self._market(path.removeprefix("/markets/"))
        if method == "GET" and path.startswith("/prices/"):
            return self._prices(path.removeprefix("/prices/"), query)
        return 404, {"errorCode": "error.request.not-found"}, {}

    def _version(self) -> str:
        return self.headers.get("Version") or "1"  # IG defaults to 1 when absent

    def _login(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if self._version() != "2":
            return 400, {"errorCode": "invalid.input"}, {}
        if body != {"identifier": USERNAME, "password": PASSWORD}:
            return 401, {"errorCode": "error.security.invalid-details"}, {}
        n = next(self.ig.counter)
        tokens = (f"cst-{n}", f"xst-{n}")
        self.ig.tokens.add(tokens)
        session = {
            "accountType": "CFD",
            "accountInfo": {
                "balance": self.ig.balance,
                "deposit": 0.0,
                "profitLoss": 0.0,
                "available": self.ig.balance,
            },
            "currencyIsoCode": "AUD",
            "currencySymbol": "A$",
            "currentAccountId": ACCOUNT_ID,
            "lightstreamerEndpoint": "https://demo-apd.marketdatasystems.com",
            "accounts": [
                {"accountId": ACCOUNT_ID, "accountName": "CFD", "preferred": True, "accountType": "CFD"}
            ],
            "clientId": "100",
            "timezoneOffset": 11,
            "hasActiveDemoAccounts": True,
            "hasActiveLiveAccounts": False,
            "trailingStopsEnabled": False,
            "reroutingEnvironment": None,
            "dealingEnabled": True,
        }
        return 200, session, {"CST": tokens[0], "X-SECURITY-TOKEN": tokens[1]}

    def _accounts(self) -> dict[str, Any]:
        return {
            "accounts": [
                {
                    "accountId": ACCOUNT_ID,
                    "accountName": "CFD",
                    "accountAlias": None,
                    "status": "ENABLED",
                    "accountType": "CFD",
                    "preferred": True,
                    "balance": {
                        "balance": self.ig.balance,
                        "deposit": 0.0,
                        "profitLoss": 0.0,
                        "available": self.ig.balance,
                    },
                    "currency": "AUD",
                    "canTransferFrom": True,
                    "canTransferTo": True,
                },
                {
                    "accountId": "XYZ987",
                    "accountName": "Spread bet",
                    "accountAlias": None,
                    "status": "ENABLED",
                    "accountType": "SPREADBET",
                    "preferred": False,
                    "balance": None,
                    "currency": "AUD",
                    "canTransferFrom": True,
                    "canTransferTo": True,
                },
            ]
        }

    def _positions(self) -> tuple[int, Any, dict[str, str]]:
        if self._version() != "2":
            return 400, {"errorCode": "invalid.input"}, {}
        positions = [
            {
                "position": {
                    "contractSize": 1.0,
                    "createdDate": "2026/03/02 10:30:00:000",
                    "createdDateUTC": "2026-03-01T23:30:00",
                    "dealId": d["dealId"],
                    "dealReference": d["dealReference"],
                    "size": d["size"],
                    "direction": d["direction"],
                    "limitLevel": None,
                    "level": d["level"],
                    "currency": "AUD",
                    "controlledRisk": False,
                    "stopLevel": None,
                    "trailingStep": None,
                    "trailingStopDistance": None,
                    "limitedRiskPremium": None,
                },
                "market": {
                    "instrumentName": d["epic"],
                    "expiry": "-",
                    "epic": d["epic"],
                    "instrumentType": "SHARES",
                    "lotSize": 1.0,
                    "high": d["level"],
                    "low": d["level"],
                    "percentageChange": 0.0,
                    "netChange": 0.0,
                    "bid": d["level"],
                    "offer": d["level"],
                    "updateTime": "10:30:00",
                    "updateTimeUTC": "23:30:00",
                    "delayTime": 0,
                    "streamingPricesAvailable": True,
                    "marketStatus": "TRADEABLE",
                    "scalingFactor": 1,
                },
            }
            for d in self.ig.deals
        ]
        return 200, {"positions": positions}, {}

    def _open(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if self._version() != "2" or not isinstance(body, dict):
            return 400, {"errorCode": "invalid.input"}, {}
        missing = [f for f in REQUIRED_OTC_FIELDS if f not in body]
        if missing or body.get("orderType") != "MARKET" or "level" in body:
            return 400, {"errorCode": "invalid.input"}, {}
        reference = body.get("dealReference") or f"ref{next(self.ig.counter)}"
        reason = self.ig.reject_epics.get(body["epic"])
        confirm = {
            "dealReference": reference,
            "dealId": f"DI{reference}",
            "epic": body["epic"],
            "expiry": body["expiry"],
            "direction": body["direction"],
            "size": body["size"],
            "level": 100.0,
            "date": "2026-03-02T10:30:00",
            "guaranteedStop": False,
            "trailingStop": False,
            "limitLevel": None,
            "stopLevel": None,
            "limitDistance": None,
            "stopDistance": None,
            "profit": None,
            "profitCurrency": None,
            "affectedDeals": [],
        }
        if reason:
            confirm |= {"dealStatus": "REJECTED", "reason": reason, "status": None}
        else:
            confirm |= {"dealStatus": "ACCEPTED", "reason": "SUCCESS", "status": "OPEN"}
            confirm |= self._book(body, confirm["dealId"], reference)
            self.ig.made[reference] = self.ig.made.get(reference, 0) + 1
        self.ig.confirms[reference] = confirm
        return 200, {"dealReference": reference}, {}

    def _book(self, body: dict[str, Any], deal_id: str, reference: str) -> dict[str, Any]:
        """Apply a deal to the positions; answers the confirm fields it changes."""
        epic, direction, size = body["epic"], body["direction"], body["size"]
        if direction == "BUY" and epic in self.ig.phantom_epics:
            return {}  # confirmed, never booked
        if direction == "BUY" and epic in self.ig.partial_fills:
            size = round(size * self.ig.partial_fills[epic])
        filled, affected = size, []
        if not body.get("forceOpen"):
            for held in [d for d in self.ig.deals if d["epic"] == epic and d["direction"] != direction]:
                if size <= 0:
                    break
                taken = min(held["size"], size)
                held["size"] -= taken
                size -= taken
                status = "PARTIALLY_CLOSED" if held["size"] else "FULLY_CLOSED"
                affected.append({"dealId": held["dealId"], "status": status})
                if not held["size"]:
                    self.ig.deals.remove(held)
        if size > 0:
            self.ig.deals.append(
                {
                    "dealId": deal_id,
                    "dealReference": reference,
                    "epic": epic,
                    "direction": direction,
                    "size": size,
                    "level": 100.0,
                }
            )
            affected.append({"dealId": deal_id, "status": "OPENED"})
        return {"affectedDeals": affected, "status": "OPEN" if size > 0 else "CLOSED", "size": filled}

    def _confirm(self, reference: str) -> tuple[int, Any, dict[str, str]]:
        if self.ig.confirm_not_ready:
            self.ig.confirm_not_ready -= 1
            return 404, {"errorCode": "error.confirms.deal-not-found"}, {}
        confirm = self.ig.confirms.get(reference)
        if confirm is None or reference in self.ig.lost_confirms:
            return 404, {"errorCode": "error.confirms.deal-not-found"}, {}
        return 200, confirm, {}

    def _market(self, epic: str) -> tuple[int, Any, dict[str, str]]:
        if self._version() != "3":
            return 400, {"errorCode": "invalid.input"}, {}
        snapshot = self.ig.markets.get(epic)
        if snapshot is None:
            return 404, {"errorCode": EPIC_UNAVAILABLE}, {}
        instrument = {
            "epic": epic,
            "expiry": "-",
            "name": epic.split(".")[2] if epic.count(".") >= 2 else epic,
            "forceOpenAllowed": True,
            "stopsLimitsAllowed": True,
            "lotSize": 1.0,
            "unit": "SHARES",
            "type": "SHARES",
            "controlledRiskAllowed": True,
            "streamingPricesAvailable": True,
            "marketId": epic,
            "currencies": [
                {
                    "code": "AUD",
                    "symbol": "A$",
                    "baseExchangeRate": 1.0,
                    "exchangeRate": 1.0,
                    "isDefault": True,
                }
            ],
            "marginDepositBands": [{"min": 0, "max": None, "margin": 20, "currency": "AUD"}],
            "marginFactor": 20,
            "marginFactorUnit": "PERCENTAGE",
            "openingHours": {"marketTimes": [{"openTime": "10:00", "closeTime": "16:00"}]},
            "expiryDetails": None,
            "rolloverDetails": None,
            "newsCode": None,
            "chartCode": None,
            "country": "AU",
            "valueOfOnePip": None,
            "onePipMeans": None,
            "contractSize": None,
            "specialInfo": [],
        }
        rules = {
            "minStepDistance": {"unit": "POINTS", "value": 1.0},
            "minDealSize": {"unit": "POINTS", "value": 1.0},
            "minControlledRiskStopDistance": {"unit": "PERCENTAGE", "value": 10.0},
            "minNormalStopOrLimitDistance": {"unit": "PERCENTAGE", "value": 1.0},
            "maxStopOrLimitDistance": {"unit": "PERCENTAGE", "value": 75.0},
            "controlledRiskSpacing": {"unit": "POINTS", "value": 10.0},
            "marketOrderPreference": "AVAILABLE_DEFAULT_OFF",
            "trailingStopsPreference": "AVAILABLE",
        }
        return 200, {"instrument": instrument, "dealingRules": rules, "snapshot": snapshot}, {}

    def _prices(self, epic: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if self._version() != "3":
            return 400, {"errorCode": "invalid.input"}, {}
        resolution = query.get("resolution", "MINUTE")
        try:
            wanted = int(query.get("max", 10))
            page_size = int(query.get("pageSize", 20))
            page_number = int(query.get("pageNumber", 1))
        except ValueError:
            return 400, {"errorCode": "invalid.input"}, {}
        if resolution not in RESOLUTIONS or wanted < 1 or page_size < 0 or page_number < 1:
            return 400, {"errorCode": "invalid.input"}, {}
        if epic not in self.ig.markets and not any(e == epic for e, _ in self.ig.price_points):
            return 404, {"errorCode": EPIC_UNAVAILABLE}, {}
        if self.ig.allowance_remaining <= 0:
            return 403, {"errorCode": HISTORICAL_ALLOWANCE_EXCEEDED}, {}
        points = self.ig.price_points.get((epic, resolution), [])[-wanted:]
        if self.ig.force_page_size is not None:
            page_size = self.ig.force_page_size
        pages = max(1, -(-len(points) // page_size)) if page_size else 1
        page = points[(page_number - 1) * page_size : page_number * page_size] if page_size else points
        page = page[: self.ig.allowance_remaining]
        self.ig.allowance_remaining -= len(page)
        metadata = {
            "allowance": {
                "remainingAllowance": self.ig.allowance_remaining,
                "totalAllowance": self.ig.allowance_total,
                "allowanceExpiry": self.ig.allowance_expiry_s,
            },
            "size": len(page),
            "pageData": {"pageSize": page_size, "pageNumber": page_number, "totalPages": pages},
        }
        return 200, {"prices": page, "instrumentType": "SHARES", "metadata": metadata}, {}
