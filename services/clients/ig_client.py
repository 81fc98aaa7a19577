"""Async client for IG Markets' REST trading API (v2 sessions, CST + X-SECURITY-TOKEN).

Follows IG's documented protocol: POST /session (Version 2) with X-IG-API-KEY returns the CST
and X-SECURITY-TOKEN headers that every later call carries; errors come back as
{"errorCode": "..."} bodies and become typed exceptions here. An expired or invalid client
token is answered by logging in again once; IG's allowance errors (rate limits) are retried
with exponential backoff. A deal is opened with POST /positions/otc, whose answer is only a
dealReference: the outcome is read from GET /confirms/{dealReference}.

Secrets (API key, password, tokens) never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("ig_client")
# httpcore's DEBUG trace prints raw response headers, and IG's carry the CST and
# X-SECURITY-TOKEN session secrets: never let that trace run in a process using this client.
logging.getLogger("httpcore").setLevel(logging.INFO)

BASE_URLS = {
    "DEMO": "https://demo-api.ig.com/gateway/deal",
    "LIVE": "https://api.ig.com/gateway/deal",
}
TOKEN_INVALID = frozenset({"error.security.client-token-invalid", "error.security.oauth-token-invalid"})
AUTH_FAILED = frozenset(
    {
        "error.security.invalid-details",
        "error.security.api-key-invalid",
        "error.security.api-key-missing",
        "error.security.account-token-invalid",
        "error.security.api-key-disabled",
    }
)
RATE_LIMITED_PREFIX = "error.public-api.exceeded-"
# IG answers a confirm that is not ready yet with 404; trading-ig retries it a few times.
CONFIRM_NOT_READY = frozenset({"error.confirms.deal-not-found"})


class IgError(Exception):
    """An IG call failed. `error_code` is IG's errorCode (or a local one); never holds secrets."""

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.status = status


class IgAuthError(IgError):
    """Credentials or API key refused: fix the configuration (IG_API_KEY / IG_USERNAME / IG_PASSWORD)."""


class IgTokenInvalid(IgError):
    """The session tokens expired or were invalidated (IG does this every weekend)."""


class IgRateLimited(IgError):
    """An IG allowance was exhausted and stayed exhausted through the backoff retries."""


class IgRequestError(IgError):
    """IG refused the request itself (bad input, account state)."""


class IgServerError(IgError):
    """IG answered 5xx."""


class IgUnavailable(IgError):
    """IG could not be reached (network error or timeout)."""


class IgDealRejected(IgError):
    """The deal was confirmed REJECTED; `confirmation.reason` says why (e.g. MARKET_CLOSED)."""

    def __init__(self, confirmation: DealConfirmation):
        super().__init__(
            f"IG rejected deal {confirmation.deal_reference}: {confirmation.reason}",
            error_code=confirmation.reason,
        )
        self.confirmation = confirmation


@dataclass(frozen=True)
class IgCredentials:
    api_key: str = field(repr=False)
    username: str = field(repr=False)
    password: str = field(repr=False)
    acc_type: str = "DEMO"
    account_id: str | None = None
    base_url: str | None = None

    def __post_init__(self) -> None:
        if self.acc_type not in BASE_URLS:
            raise ValueError(f"acc_type must be one of {sorted(BASE_URLS)}, got {self.acc_type!r}")
        for name in ("api_key", "username", "password"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty")

    @property
    def url(self) -> str:
        return (self.base_url or BASE_URLS[self.acc_type]).rstrip("/")

    @classmethod
    def from_lookup(
        cls, lookup: Callable[[str], str | None], default_base_url: str | None = None
    ) -> IgCredentials | None:
        """From IG_* settings via `lookup` (env or secrets file); None unless key, user and password are set."""
        key, user, password = lookup("IG_API_KEY"), lookup("IG_USERNAME"), lookup("IG_PASSWORD")
        if not (key and user and password):
            return None
        return cls(
            api_key=key,
            username=user,
            password=password,
            acc_type=(lookup("IG_ACC_TYPE") or "DEMO").upper(),
            account_id=lookup("IG_ACCOUNT_ID") or None,
            base_url=lookup("IG_BASE_URL") or default_base_url,
        )


@dataclass(frozen=True, slots=True)
class DealConfirmation:
    deal_reference: str
    deal_id: str | None
    deal_status: str  # ACCEPTED | REJECTED
    reason: str | None  # SUCCESS, INSUFFICIENT_FUNDS, MARKET_CLOSED, ...
    status: str | None  # OPEN, CLOSED, ...
    epic: str | None
    direction: str | None
    size: float | None
    level: float | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DealConfirmation:
        return cls(
            deal_reference=body.get("dealReference", ""),
            deal_id=body.get("dealId"),
            deal_status=body.get("dealStatus", "UNKNOWN"),
            reason=body.get("reason"),
            status=body.get("status"),
            epic=body.get("epic"),
            direction=body.get("direction"),
            size=body.get("size"),
            level=body.get("level"),
        )


Sleep = Callable[[float], Awaitable[None]]


class IgClient:
    """One IG session. Use as `async with IgClient(creds) as ig:`; calls log in on first use."""

    def __init__(
        self,
        credentials: IgCredentials,
        *,
        timeout_s: float = 10.0,
        rate_limit_retries: int = 3,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        confirm_attempts: int = 5,
        confirm_delay_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._creds = credentials
        self._http = httpx.AsyncClient(base_url=credentials.url, timeout=timeout_s, transport=transport)
        self._tokens: dict[str, str] | None = None
        self._login_lock = asyncio.Lock()
        self._rate_limit_retries = rate_limit_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._confirm_attempts = confirm_attempts
        self._confirm_delay_s = confirm_delay_s
        self._sleep = sleep
        self.session: dict[str, Any] = {}  # the last login's body (account info, no tokens)
        self.logins = 0

    def __repr__(self) -> str:
        state = "logged in" if self._tokens else "not logged in"
        return f"IgClient({self._creds.url}, {self._creds.acc_type}, {state})"

    async def __aenter__(self) -> IgClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- session ---------------------------------------------------------------------------

    async def login(self) -> dict[str, Any]:
        """POST /session v2; keeps CST and X-SECURITY-TOKEN for later calls."""
        body = {"identifier": self._creds.username, "password": self._creds.password}
        response = await self._send("POST", "/session", version=2, json=body, tokens=None)
        cst, xst = response.headers.get("CST"), response.headers.get("X-SECURITY-TOKEN")
        if not (cst and xst):
            raise IgAuthError("IG login answered without CST / X-SECURITY-TOKEN", status=response.status_code)
        self._tokens = {"CST": cst, "X-SECURITY-TOKEN": xst}
        self.session = response.json()
        self.logins += 1
        log.info("IG login ok", extra={"ig_account": self.session.get("currentAccountId")})
        return self.session

    async def _ensure_session(self, stale: dict[str, str] | None = None) -> dict[str, str]:
        # One login at a time; a caller whose tokens went stale re-logs only if nobody else has.
        async with self._login_lock:
            if self._tokens is None or self._tokens is stale:
                await self.login()
            assert self._tokens is not None
            return self._tokens

    # -- reads -----------------------------------------------------------------------------

    async def accounts(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/accounts", version=1)).get("accounts", [])

    async def account(self) -> dict[str, Any]:
        """The configured account (IG_ACCOUNT_ID), else the session's current one."""
        accounts = await self.accounts()  # logs in first, which fills self.session
        wanted = self._creds.account_id or self.session.get("currentAccountId")
        for account in accounts:
            if account.get("accountId") == wanted:
                return account
        raise IgRequestError(
            f"account {wanted} is not among this login's accounts", error_code="account-not-found"
        )

    async def positions(self) -> list[dict[str, Any]]:
        """GET /positions v2: [{"position": {...}, "market": {...}}]."""
        return (await self._call("GET", "/positions", version=2)).get("positions", [])

    # -- deals -----------------------------------------------------------------------------

    async def open_position(
        self,
        *,
        epic: str,
        direction: str,
        size: float,
        currency: str = "AUD",
        expiry: str = "-",
        force_open: bool = False,
        deal_reference: str | None = None,
    ) -> DealConfirmation:
        """A MARKET deal; with force_open False a SELL nets against an open BUY (closes it).

        Raises IgDealRejected when the confirm says REJECTED.
        """
        if direction not in ("BUY", "SELL"):
            raise ValueError(f"direction must be BUY or SELL, got {direction!r}")
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        body = {
            "currencyCode": currency,
            "dealReference": deal_reference or uuid.uuid4().hex[:30],
            "direction": direction,
            "epic": epic,
            "expiry": expiry,
            "forceOpen": force_open,
            "guaranteedStop": False,
            "orderType": "MARKET",
            "size": size,
            "timeInForce": "FILL_OR_KILL",
            "trailingStop": False,
        }
        reference = (await self._call("POST", "/positions/otc", version=2, json=body))["dealReference"]
        confirmation = await self.confirm(reference)
        if confirmation.deal_status != "ACCEPTED":
            raise IgDealRejected(confirmation)
        return confirmation

    async def confirm(self, deal_reference: str) -> DealConfirmation:
        """GET /confirms/{dealReference}, retried while IG says the deal is not found yet."""
        for attempt in range(1, self._confirm_attempts + 1):
            try:
                body = await self._call("GET", f"/confirms/{deal_reference}", version=1)
                return DealConfirmation.from_body(body)
            except IgRequestError as exc:
                if exc.error_code not in CONFIRM_NOT_READY or attempt == self._confirm_attempts:
                    raise
                await self._sleep(self._confirm_delay_s)
        raise AssertionError("unreachable: the loop returns or raises")

    # -- transport -------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, version: int, json: Any = None) -> dict[str, Any]:
        """An authenticated call: one re-login on an invalid token, backoff on rate limits (login included)."""
        tokens: dict[str, str] | None = None
        stale: dict[str, str] | None = None
        relogged = False
        backoffs = 0
        while True:
            try:
                tokens = await self._ensure_session(stale)
                response = await self._send(method, path, version=version, json=json, tokens=tokens)
                return response.json() if response.content else {}
            except IgTokenInvalid:
                if relogged:
                    raise  # a fresh login's token refused too: not something another login fixes
                relogged, stale = True, tokens
                log.info("IG token invalid; logging in again", extra={"ig_path": path})
            except IgRateLimited as exc:
                if backoffs == self._rate_limit_retries:
                    raise
                delay = min(self._backoff_s * 2**backoffs, self._max_backoff_s)
                backoffs += 1
                log.warning(
                    "IG allowance exceeded; backing off",
                    extra={"ig_path": path, "ig_error": exc.error_code, "delay_s": delay},
                )
                await self._sleep(delay)

    async def _send(
        self, method: str, path: str, *, version: int, json: Any, tokens: dict[str, str] | None
    ) -> httpx.Response:
        headers = {
            "X-IG-API-KEY": self._creds.api_key,
            "Version": str(version),
            "Accept": "application/json; charset=UTF-8",
            "Content-Type": "application/json",
            **(tokens or {}),
        }
        try:
            response = await self._http.request(method, path, headers=headers, json=json)
        except httpx.TimeoutException:
            raise IgUnavailable(f"IG {method} {path} timed out", error_code="timeout") from None
        except httpx.TransportError as exc:
            raise IgUnavailable(
                f"IG {method} {path} unreachable: {type(exc).__name__}", error_code="network"
            ) from None
        if response.status_code >= 400 or _error_code(response):
            raise _error_for(method, path, response)
        return response


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("errorCode") if isinstance(body, dict) else None


def _error_for(method: str, path: str, response: httpx.Response) -> IgError:
    code = _error_code(response)
    status = response.status_code
    message = f"IG {method} {path} failed: {code or 'no errorCode'} (HTTP {status})"
    if code in TOKEN_INVALID:
        kind: type[IgError] = IgTokenInvalid
    elif code in AUTH_FAILED:
        kind = IgAuthError
    elif code and code.startswith(RATE_LIMITED_PREFIX):
        kind = IgRateLimited
    elif status >= 500:
        kind = IgServerError
    else:
        kind = IgRequestError
    return kind(message, error_code=code, status=status)


def default_epic(symbol: str) -> str:
    """IG epic for an ASX share CFD, in the form third-party ASX projects use (not official)."""
    return f"AA.D.{symbol.split('.')[0].upper()}.CASH.IP"


def net_ig_sizes(ig_positions: list[Mapping[str, Any]]) -> dict[str, float]:
    """Net size per epic from GET /positions (BUY positive, SELL negative; v1 or v2 fields)."""
    net: dict[str, float] = {}
    for item in ig_positions:
        position, market = item.get("position") or {}, item.get("market") or {}
        size = position.get("size", position.get("dealSize")) or 0
        signed = float(size) if position.get("direction") == "BUY" else -float(size)
        epic = market.get("epic") or position.get("epic") or "?"
        net[epic] = net.get(epic, 0.0) + signed
    return net


def reconcile(
    paper_quantities: Mapping[str, int], ig_positions: list[Mapping[str, Any]], epics: Mapping[str, str]
) -> dict[str, Any]:
    """How the IG account's positions differ from the paper book, symbol by symbol."""
    net = net_ig_sizes(ig_positions)
    symbol_of = {epic: symbol for symbol, epic in epics.items()}
    symbols = sorted(set(paper_quantities) | {symbol_of[e] for e in net if e in symbol_of})
    rows = []
    for symbol in symbols:
        epic = epics.get(symbol, default_epic(symbol))
        paper, ig = paper_quantities.get(symbol, 0), net.get(epic, 0.0)
        rows.append(
            {
                "symbol": symbol,
                "epic": epic,
                "paper_quantity": paper,
                "ig_size": ig,
                "difference": ig - paper,
                "matches": ig == paper,
            }
        )
    unmapped = [{"epic": epic, "size": size} for epic, size in sorted(net.items()) if epic not in symbol_of]
    return {
        "positions": rows,
        "unmapped_ig_positions": unmapped,
        "in_sync": all(r["matches"] for r in rows) and not unmapped,
    }
