"""MarketAux news client: `GET /v1/news/all` over httpx, with typed errors and bounded retries.

The API token travels as the `api_token` query parameter (MarketAux's only auth), so every URL
the client builds is a secret. It is redacted from exception messages, from our own log lines,
from `repr(client)`, and from httpx's own "HTTP Request: GET <url>" INFO line.

Retries: 429 (rate limit over the last 60 s), 5xx and network failures are transient; 400, 401,
402 (daily quota), 403 and 404 will fail the same way again, so they raise at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.base.redaction import redact as redact_secrets
from services.base.redaction import secret_list

log = logging.getLogger(__name__)

NEWS_PATH = "/v1/news/all"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


def redact(text: str, token: str | None = None) -> str:
    """Remove the token from any text: the literal value and any `api_token=...` parameter
    (services.base.redaction, the suite's one masking of credentials in URLs)."""
    return redact_secrets(text, secret_list([token] if token else []))


class _RedactTokenFilter(logging.Filter):
    """httpx logs each request's full URL at INFO; strip the token before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_token=" in message:
            record.msg, record.args = redact(message), None
        return True


_httpx_filter = _RedactTokenFilter()
if _httpx_filter not in logging.getLogger("httpx").filters:
    logging.getLogger("httpx").addFilter(_httpx_filter)


# --- errors: named for what the operator (or the caller) must do -------------------------------


class MarketauxError(Exception):
    """Base of every client failure. `code` is MarketAux's error code (or ours for local ones)."""

    retryable = False

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "error", retry_after_s: float = 0.0
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class MarketauxNotConfigured(MarketauxError):
    """No API token: set MARKETAUX_API_TOKEN."""


class MarketauxTokenInvalid(MarketauxError):
    """401 invalid_api_token: the token is wrong or revoked; replace MARKETAUX_API_TOKEN."""


class MarketauxUsageLimitReached(MarketauxError):
    """402 usage_limit_reached: the daily quota is spent; wait for the reset or upgrade the plan."""


class MarketauxRequestRejected(MarketauxError):
    """400/403/404: our request is malformed or not allowed on this plan; a bug or a plan limit."""


class MarketauxRateLimited(MarketauxError):
    """429 rate_limit_reached: too many requests in the last 60 s; slow down."""

    retryable = True


class MarketauxServerError(MarketauxError):
    """5xx (server_error, maintenance_mode): MarketAux is down; try later."""

    retryable = True


class MarketauxUnreachable(MarketauxError):
    """Network failure or timeout talking to MarketAux."""

    retryable = True


class MarketauxBadResponse(MarketauxError):
    """A 200 whose body is not MarketAux's documented shape."""


# --- response model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketauxEntity:
    symbol: str
    name: str | None
    country: str | None
    type: str | None
    industry: str | None
    match_score: float | None
    sentiment_score: float | None


@dataclass(frozen=True, slots=True)
class MarketauxArticle:
    uuid: str
    title: str
    description: str
    snippet: str
    url: str
    source: str
    language: str | None
    published_at: datetime
    entities: tuple[MarketauxEntity, ...]

    def entity_for(self, symbol: str) -> MarketauxEntity | None:
        """The entity matching `symbol` ("CBA.AX"), also accepting the bare code ("CBA") when
        MarketAux lists the entity under an Australian listing."""
        wanted = symbol.upper()
        code = wanted.split(".")[0]
        for entity in self.entities:
            got = entity.symbol.upper()
            if got == wanted or (got == code and (entity.country or "").lower() == "au"):
                return entity
        return None


@dataclass(frozen=True, slots=True)
class NewsPage:
    articles: tuple[MarketauxArticle, ...]
    found: int
    returned: int
    limit: int
    page: int
    skipped: int  # articles dropped because they lacked a uuid, title or valid published_at


def parse_news(body: Any) -> NewsPage:
    """Parse a /v1/news/all body. Raises MarketauxBadResponse when `meta`/`data` are missing;
    individual malformed articles are skipped and counted, because one bad row must not hide
    the rest of the news."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise MarketauxBadResponse("response has no 'data' list", code="bad_response")
    raw_meta = body.get("meta")
    meta: dict = raw_meta if isinstance(raw_meta, dict) else {}
    articles = [a for a in (_parse_article(raw) for raw in body["data"]) if a is not None]
    return NewsPage(
        articles=tuple(articles),
        found=_int(meta.get("found"), len(articles)),
        returned=_int(meta.get("returned"), len(body["data"])),
        limit=_int(meta.get("limit"), len(body["data"])),
        page=_int(meta.get("page"), 1),
        skipped=len(body["data"]) - len(articles),
    )


def _parse_article(raw: Any) -> MarketauxArticle | None:
    if not isinstance(raw, dict):
        return None
    published = _parse_time(raw.get("published_at"))
    if not raw.get("uuid") or not isinstance(raw.get("title"), str) or published is None:
        log.warning("skipping malformed MarketAux article", extra={"uuid": str(raw.get("uuid"))})
        return None
    raw_entities = raw.get("entities")
    entities: list = raw_entities if isinstance(raw_entities, list) else []
    return MarketauxArticle(
        uuid=str(raw["uuid"]),
        title=raw["title"],
        description=_str(raw.get("description")),
        snippet=_str(raw.get("snippet")),
        url=_str(raw.get("url")),
        source=_str(raw.get("source")),
        language=raw.get("language") if isinstance(raw.get("language"), str) else None,
        published_at=published,
        entities=tuple(e for e in map(_parse_entity, entities) if e is not None),
    )


def _parse_entity(raw: Any) -> MarketauxEntity | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("symbol"), str):
        return None
    return MarketauxEntity(
        symbol=raw["symbol"],
        name=_opt_str(raw.get("name")),
        country=_opt_str(raw.get("country")),
        type=_opt_str(raw.get("type")),
        industry=_opt_str(raw.get("industry")),
        match_score=_opt_float(raw.get("match_score")),
        sentiment_score=_opt_float(raw.get("sentiment_score")),
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # MarketAux documents all dates as UTC; a naive stamp is read as such.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


# --- the client ----------------------------------------------------------------------------------


def format_published_after(instant: datetime) -> str:  # also used for published_before
    """MarketAux's `Y-m-d\\TH:i:s` in UTC (all its dates are UTC)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def backoff_delays(attempts: int, base_s: float, cap_s: float = MAX_BACKOFF_S) -> list[float]:
    """Waits between attempts: base, 2*base, 4*base..., capped (attempts-1 of them)."""
    return [min(cap_s, base_s * 2**i) for i in range(max(0, attempts - 1))]


class MarketauxClient:
    """Async client for MarketAux /v1/news/all. Use as an async context manager or call aclose()."""

    def __init__(
        self,
        token: str | None,
        base_url: str = "https://api.marketaux.com",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._token = token or None
        self.base_url = base_url.rstrip("/")
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._timeout_s = timeout_s
        # Built at the first request: its TLS context (the CA bundle, ~0.1 s and ~1 MB) is not
        # paid at start-up, nor at all while no token is configured.
        self._client: httpx.AsyncClient | None = None
        self.requests_made = 0  # HTTP requests sent, retries included (quota accounting)

    def __repr__(self) -> str:
        return f"MarketauxClient(base_url={self.base_url!r}, configured={self.configured})"

    @property
    def configured(self) -> bool:
        return self._token is not None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout_s)
        return self._client

    async def __aenter__(self) -> MarketauxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def fetch_news(
        self,
        symbols: Sequence[str] = (),
        *,
        published_after: datetime | None = None,
        published_before: datetime | None = None,
        language: str = "en",
        limit: int = 3,
        filter_entities: bool = True,
        countries: Iterable[str] = (),
    ) -> NewsPage:
        """One page of news for all `symbols` in a single request (one quota unit however many
        symbols). `filter_entities` keeps only the queried entities on each article."""
        if self._token is None:
            raise MarketauxNotConfigured(
                "not configured: MARKETAUX_API_TOKEN is not set", code="not_configured"
            )
        params: dict[str, str | int] = {"language": language, "limit": limit}
        if symbols:
            params["symbols"] = ",".join(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
            params["filter_entities"] = "true" if filter_entities else "false"
        if countries:
            params["countries"] = ",".join(countries)
        if published_after is not None:
            params["published_after"] = format_published_after(published_after)
        if published_before is not None:
            params["published_before"] = format_published_after(published_before)
        return parse_news(await self._get_json(NEWS_PATH, params))

    async def _get_json(self, path: str, params: dict[str, str | int]) -> Any:
        for attempt, delay in enumerate(backoff_delays(self.attempts, self.backoff_s), start=1):
            try:
                return await self._get_once(path, params)
            except MarketauxError as exc:
                if not exc.retryable:
                    raise
                wait_s = min(MAX_BACKOFF_S, max(delay, exc.retry_after_s))
                log.warning(
                    "MarketAux request failed, retrying",
                    extra={"error": str(exc), "attempt": attempt, "retry_in_s": wait_s},
                )
                await self._sleep(wait_s)
        return await self._get_once(path, params)  # the last attempt: its error goes to the caller

    async def _get_once(self, path: str, params: dict[str, str | int]) -> Any:
        self.requests_made += 1
        try:
            response = await self._http().get(path, params={**params, "api_token": self._token or ""})
        except httpx.TimeoutException:
            raise MarketauxUnreachable("MarketAux timed out", code="timeout") from None
        except httpx.TransportError as exc:
            # `from None`: httpx exceptions carry the request, whose URL holds the token.
            detail = redact(f"{type(exc).__name__}: {exc}", self._token)
            raise MarketauxUnreachable(f"MarketAux unreachable ({detail})", code="network") from None
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise MarketauxBadResponse("response is not JSON", status=200, code="bad_response") from None
        raise self._error_for(response)

    def _error_for(self, response: httpx.Response) -> MarketauxError:
        status = response.status_code
        code, message = _error_body(response)
        text = redact(f"MarketAux HTTP {status} {code}: {message}", self._token)
        if status == 401:
            return MarketauxTokenInvalid(text, status=status, code=code)
        if status == 402:
            return MarketauxUsageLimitReached(text, status=status, code=code)
        if status == 429:
            return MarketauxRateLimited(
                text, status=status, code=code, retry_after_s=_retry_after_s(response)
            )
        if status >= 500:
            return MarketauxServerError(text, status=status, code=code)
        return MarketauxRequestRejected(text, status=status, code=code)


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """MarketAux errors are {"error": {"code", "message"}}; proxies may send anything else."""
    try:
        body = response.json()
    except ValueError:
        return "http_" + str(response.status_code), response.reason_phrase or "no body"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "http_" + str(response.status_code), response.reason_phrase or "unexpected body"
    return str(error.get("code") or f"http_{response.status_code}"), str(error.get("message") or "")


def _retry_after_s(response: httpx.Response) -> float:
    """Honour a numeric Retry-After if a proxy sends one (MarketAux documents none)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0
