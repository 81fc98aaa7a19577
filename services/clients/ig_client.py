"""Async client for IG Markets' REST trading API (v2 sessions, CST + X-SECURITY-TOKEN).

Follows IG's documented protocol: POST /session (Version 2) with X-IG-API-KEY returns the CST
and X-SECURITY-TOKEN headers that every later call carries; errors come back as
{"errorCode": "..."} bodies and become typed exceptions here. An expired or invalid client
token is answered by logging in again once; IG's allowance errors (rate limits) are retried
with exponential backoff. A deal is opened with POST /positions/otc, whose answer is only a
dealReference: the outcome is read from GET /confirms/{dealReference}.

An order is never ambiguous: it always carries our own dealReference, and when its POST times
out, loses its connection or answers 5xx the client does not send it again. It looks the
reference up instead (`find_deal`: the confirm, retried while IG says it is not found yet, then
GET /positions v2, whose positions carry their dealReference) and answers what that proves: the
deal made, rejected, or IgDealUnknown when neither shows it (or the lookup itself fails). Whether an order that was not found
may be sent again is the caller's decision (services/paper-trading/ig_mirror.py), which needs
more than one look (see services/domain/ig_reconciliation.py).

Prices: GET /markets/{epic} (Version 3) answers the market's snapshot (bid, offer, updateTime,
delayTime, marketStatus, ...), and GET /prices/{epic} (Version 3) its bars. Bars draw on IG's
historical-data allowance (10,000 points a week on live accounts), which every /prices answer
reports in `metadata.allowance`: the client keeps the last one (`historical_allowance`) and, while
it is used up, refuses further /prices calls itself with IgAllowanceExhausted. That allowance
resets weekly, so its exceeded error is not retried with backoff as the per-minute ones are.

Secrets (API key, password, tokens) never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from services.clients.ig_epics import default_epic

if TYPE_CHECKING:
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
HISTORICAL_ALLOWANCE_EXCEEDED = "error.public-api.exceeded-account-historical-data-allowance"
# GET /prices/{epic} v3 `resolution` values (IG's reference, as transcribed in Fuuzetsu/ig-trading-rest
# src/Web/IG/Types/Resolution.hs; trading-ig's conv_resol maps pandas offsets onto the same names).
RESOLUTIONS = frozenset(
    {
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
    }
)
# Pages followed at most for one /prices call (paging is disabled by pageSize=0, so 1 is usual).
MAX_PRICE_PAGES = 50
# IG answers a confirm that is not ready yet with 404; trading-ig retries it a few times.
CONFIRM_NOT_READY = frozenset({"error.confirms.deal-not-found"})


class IgError(Exception):
    """An IG call failed. `error_code` is IG's errorCode (or a local one); never holds secrets.

    `path` is the request that failed (a login's failure says /session, not the call it was for).
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status: int | None = None,
        path: str | None = None,
    ):
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.path = path


class IgAuthError(IgError):
    """Credentials or API key refused: fix the configuration (IG_API_KEY / IG_USERNAME / IG_PASSWORD)."""


class IgTokenInvalid(IgError):
    """The session tokens expired or were invalidated (IG does this every weekend)."""


class IgRateLimited(IgError):
    """An IG allowance was exhausted and stayed exhausted through the backoff retries."""


class IgAllowanceExhausted(IgRateLimited):
    """IG's historical-price allowance is used up: no bars from IG until it resets.

    `resets_in_s` is how long until then as IG last stated it (None when unknown). Use another
    price source meanwhile; the snapshot (GET /markets) does not draw on this allowance.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status: int | None = None,
        path: str | None = None,
        resets_in_s: float | None = None,
    ):
        super().__init__(message, error_code=error_code, status=status, path=path)
        self.resets_in_s = resets_in_s


class IgRequestError(IgError):
    """IG refused the request itself (bad input, account state)."""


class IgServerError(IgError):
    """IG answered 5xx."""


class IgUnavailable(IgError):
    """IG could not be reached (network error or timeout)."""


class IgDealUnknown(IgError):
    """A deal request may or may not have been made: its POST failed in a way that proves
    neither (timeout, dropped connection, 5xx), and neither its confirm nor GET /positions shows
    it. Never send it again on this alone; `deal_reference` is what to look up later."""

    def __init__(self, message: str, *, deal_reference: str, error_code: str | None = None):
        super().__init__(message, error_code=error_code)
        self.deal_reference = deal_reference


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

    @classmethod
    def from_position(cls, item: Mapping[str, Any]) -> DealConfirmation:
        """What a GET /positions v2 entry proves: the deal was made (ACCEPTED), with its id and size.
        `reason` says where it was read, as IG's own reason is not in a position."""
        position, market = item.get("position") or {}, item.get("market") or {}
        return cls(
            deal_reference=position.get("dealReference") or "",
            deal_id=position.get("dealId"),
            deal_status="ACCEPTED",
            reason="FOUND_IN_POSITIONS",
            status="OPEN",
            epic=market.get("epic"),
            direction=position.get("direction"),
            size=position.get("size", position.get("dealSize")),
            level=position.get("level", position.get("openLevel")),
        )


@dataclass(frozen=True, slots=True)
class HistoricalAllowance:
    """`metadata.allowance` of a /prices answer: data points left, the period's total, and the
    seconds until the period ends (when `remaining` is reset), stated at `observed_at` (monotonic s)."""

    remaining: int
    total: int
    expiry_s: float
    observed_at: float

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], observed_at: float) -> HistoricalAllowance | None:
        allowance = metadata.get("allowance") if isinstance(metadata, Mapping) else None
        if not isinstance(allowance, Mapping):
            return None
        try:
            return cls(
                remaining=int(allowance["remainingAllowance"]),
                total=int(allowance["totalAllowance"]),
                expiry_s=float(allowance["allowanceExpiry"]),
                observed_at=observed_at,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def resets_in_s(self, at: float) -> float:
        """Seconds from monotonic time `at` until the allowance period ends (0 once it has)."""
        return max(0.0, self.observed_at + self.expiry_s - at)

    def exhausted(self, at: float) -> bool:
        """Nothing left and the period not over yet at monotonic time `at`."""
        return self.remaining <= 0 and self.resets_in_s(at) > 0


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
        allowance_retry_s: float = 900.0,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        # httpx (with httpcore, h11, anyio) weighs megabytes: loaded when a client is built, so a
        # service that only checks whether IG is configured never pays for it.
        import httpx

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
        self._monotonic = monotonic
        # How long to hold back /prices after IG said the allowance is exceeded without us knowing
        # when it resets (no earlier answer stated the expiry): one probe per period, not per call.
        self._allowance_retry_s = allowance_retry_s
        self.session: dict[str, Any] = {}  # the last login's body (account info, no tokens)
        self.logins = 0
        self.historical_allowance: HistoricalAllowance | None = None  # as the last /prices stated it
        # /prices requests sent so far, and which of them the kept allowance came from: an answer to
        # an earlier request that arrives later (calls run concurrently) is older news than the
        # kept one and must not undo it (seen: 9,994 left, read after "used up").
        self._prices_asked = 0
        self._allowance_from = 0

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

    # -- prices ----------------------------------------------------------------------------

    async def market(self, epic: str) -> dict[str, Any]:
        """GET /markets/{epic} v3: {"instrument": {...}, "dealingRules": {...}, "snapshot": {...}}."""
        return await self._call("GET", f"/markets/{_path_segment(epic)}", version=3)

    async def prices(self, epic: str, resolution: str, max_points: int) -> dict[str, Any]:
        """GET /prices/{epic} v3: the latest `max_points` bars at `resolution` (MINUTE, MINUTE_5, ...).

        Answers IG's body: {"prices": [...] (oldest first), "instrumentType", "metadata":
        {"allowance", "size", "pageData"}}; pages are requested off (pageSize=0) and followed
        should IG page anyway, their prices joined. Each answer's allowance is kept in
        `historical_allowance`. Raises IgAllowanceExhausted, without asking IG, while the kept
        allowance is used up; and when IG says so (its errorCode, or an answer with no prices and
        nothing remaining). An answer that uses up the last points is still returned.
        """
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)}, got {resolution!r}")
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
        self._refuse_if_allowance_exhausted(epic)
        self._prices_asked += 1
        asked = self._prices_asked
        path = f"/prices/{_path_segment(epic)}"
        params: dict[str, str | int] = {"resolution": resolution, "max": max_points, "pageSize": 0}
        body: dict[str, Any] = {}
        points: list[Any] = []
        for page in range(1, MAX_PRICE_PAGES + 1):
            try:
                body = await self._call("GET", path, version=3, params=params | {"pageNumber": page})
            except IgAllowanceExhausted as exc:
                raise self._allowance_refused(exc, asked) from None
            self._keep_allowance(body.get("metadata") or {}, asked)
            points += body.get("prices") or []
            page_data = (body.get("metadata") or {}).get("pageData") or {}
            if int(page_data.get("totalPages") or 0) <= page:
                break
        if not points and self.historical_allowance and self.historical_allowance.remaining <= 0:
            raise self._allowance_refused(
                IgAllowanceExhausted(
                    f"IG GET {path}: no prices, historical allowance used up",
                    error_code=HISTORICAL_ALLOWANCE_EXCEEDED,
                ),
                asked,
            )
        return body | {"prices": points}

    def _keep_allowance(self, metadata: Mapping[str, Any], asked: int) -> None:
        allowance = HistoricalAllowance.from_metadata(metadata, self._monotonic())
        if allowance is None or asked < self._allowance_from:
            return  # none stated, or the answer to a request sent before the kept one's
        self.historical_allowance, self._allowance_from = allowance, asked
        log.debug(
            "IG historical allowance",
            extra={
                "remaining": allowance.remaining,
                "total": allowance.total,
                "expiry_s": allowance.expiry_s,
            },
        )

    def _refuse_if_allowance_exhausted(self, epic: str) -> None:
        allowance, now = self.historical_allowance, self._monotonic()
        if allowance is not None and allowance.exhausted(now):
            resets_in_s = allowance.resets_in_s(now)
            raise IgAllowanceExhausted(
                f"IG historical-price allowance used up (0 of {allowance.total} left, "
                f"resets in {math.ceil(resets_in_s)} s); not asking for {epic}",
                error_code=HISTORICAL_ALLOWANCE_EXCEEDED,
                resets_in_s=resets_in_s,
            )

    def _allowance_refused(self, exc: IgAllowanceExhausted, asked: int) -> IgAllowanceExhausted:
        """Note the allowance as used up (until the known expiry, else for allowance_retry_s), whatever
        request `asked` was: a refusal is never older news than a number left."""
        self._allowance_from = max(self._allowance_from, asked)
        now, known = self._monotonic(), self.historical_allowance
        resets_in_s = known.resets_in_s(now) if known is not None else 0.0
        if resets_in_s <= 0:
            resets_in_s = self._allowance_retry_s
        total = known.total if known is not None else 0
        self.historical_allowance = HistoricalAllowance(0, total, resets_in_s, now)
        log.warning("IG historical-price allowance used up", extra={"resets_in_s": round(resets_in_s)})
        exc.resets_in_s = resets_in_s
        return exc

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

        Sent once: after a timeout, a lost connection or a 5xx the reference is looked up
        (`find_deal`), never resent. Raises IgDealRejected when IG says REJECTED, IgDealUnknown
        when the lookup shows nothing (made or not, nobody can tell yet).
        """
        if direction not in ("BUY", "SELL"):
            raise ValueError(f"direction must be BUY or SELL, got {direction!r}")
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        reference: str = deal_reference or uuid.uuid4().hex[:30]
        body = {
            "currencyCode": currency,
            "dealReference": reference,
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
        try:
            answer = await self._call("POST", "/positions/otc", version=2, json=body)
            reference = str(answer.get("dealReference") or reference)
        except (IgUnavailable, IgServerError) as exc:
            if exc.path != "/positions/otc":
                raise  # the login before it failed: nothing was sent
            # Timed out, connection lost, or 5xx: IG may have made the deal. Never resend; look.
            log.warning(
                "IG deal request ambiguous; looking the reference up",
                extra={"deal_reference": reference, "ig_error": exc.error_code, "status": exc.status},
            )
        try:
            confirmation = await self.find_deal(reference)
        except IgError as exc:  # sent, and what became of it cannot be read now
            raise IgDealUnknown(
                f"IG deal {reference}: sent, and looking it up failed: {exc}",
                deal_reference=reference,
                error_code=exc.error_code,
            ) from None
        if confirmation is None:
            raise IgDealUnknown(
                f"IG deal {reference}: neither its confirm nor the positions show it",
                deal_reference=reference,
            )
        if confirmation.deal_status != "ACCEPTED":
            raise IgDealRejected(confirmation)
        return confirmation

    async def find_deal(self, deal_reference: str) -> DealConfirmation | None:
        """What IG says of a deal reference: its confirm (retried while not found yet, as IG
        answers before the deal is decided), else an open position carrying the reference, else
        None. IG keeps confirms for a short while only (a minute, per third-party clients quoting
        IG's reference: an assumption), positions for as long as they are open; a deal that
        closed another position opens none, so None alone never proves a deal was not made."""
        try:
            return await self.confirm(deal_reference)
        except IgRequestError as exc:
            if exc.error_code not in CONFIRM_NOT_READY:
                raise
        for item in await self.positions():
            if (item.get("position") or {}).get("dealReference") == deal_reference:
                return DealConfirmation.from_position(item)
        return None

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

    async def _call(
        self,
        method: str,
        path: str,
        *,
        version: int,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any]:
        """An authenticated call: one re-login on an invalid token, backoff on rate limits (login
        included), except the weekly historical allowance, which no backoff brings back."""
        tokens: dict[str, str] | None = None
        stale: dict[str, str] | None = None
        relogged = False
        backoffs = 0
        while True:
            try:
                tokens = await self._ensure_session(stale)
                response = await self._send(
                    method, path, version=version, json=json, tokens=tokens, params=params
                )
                return response.json() if response.content else {}
            except IgAllowanceExhausted:
                raise
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
        self,
        method: str,
        path: str,
        *,
        version: int,
        json: Any,
        tokens: dict[str, str] | None,
        params: Mapping[str, str | int] | None = None,
    ) -> httpx.Response:
        headers = {
            "X-IG-API-KEY": self._creds.api_key,
            "Version": str(version),
            "Accept": "application/json; charset=UTF-8",
            "Content-Type": "application/json",
            **(tokens or {}),
        }
        import httpx  # already loaded by __init__: a dictionary lookup

        try:
            response = await self._http.request(method, path, headers=headers, json=json, params=params)
        except httpx.TimeoutException:
            raise IgUnavailable(f"IG {method} {path} timed out", error_code="timeout", path=path) from None
        except httpx.TransportError as exc:
            raise IgUnavailable(
                f"IG {method} {path} unreachable: {type(exc).__name__}", error_code="network", path=path
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
    elif code == HISTORICAL_ALLOWANCE_EXCEEDED:
        kind = IgAllowanceExhausted
    elif code and code.startswith(RATE_LIMITED_PREFIX):
        kind = IgRateLimited
    elif status >= 500:
        kind = IgServerError
    else:
        kind = IgRequestError
    return kind(message, error_code=code, status=status, path=path)


def _path_segment(value: str) -> str:
    """`value` as one path segment (epics are [A-Za-z0-9._], but a stray / must not change the path)."""
    if not value:
        raise ValueError("an empty epic")
    return quote(value, safe="")


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
