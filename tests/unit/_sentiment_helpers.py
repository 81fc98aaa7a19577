"""A local MarketAux stand-in speaking the documented /v1/news/all formats (tests only).

It validates what the real API validates (token, published_after format, limit), filters by
symbols / filter_entities / language / published_after, enforces a daily quota with 402 like the
free plan, and can be scripted to answer errors, drop connections or hang.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "mx-test-token-5f1c9a7e2b"

ERRORS: dict[int, tuple[str, str]] = {
    400: ("malformed_parameters", "The published_after parameter(s) are incorrectly formatted."),
    401: ("invalid_api_token", "An invalid API token was supplied."),
    402: ("usage_limit_reached", "The usage limit for this account has been reached."),
    403: ("endpoint_access_restricted", "Access to this endpoint is restricted on your plan."),
    404: ("invalid_api_endpoint", "The requested endpoint does not exist."),
    429: ("rate_limit_reached", "Too many requests have been made in the last 60 seconds."),
    500: ("server_error", "A server error occurred."),
    503: ("maintenance_mode", "The service is currently under maintenance."),
}
# Y-m-d\TH:i:s, Y-m-d\TH:i, Y-m-d\TH, Y-m-d, Y-m, Y
_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2})?)?)?)?)?$")


def article(
    uuid: str,
    title: str,
    symbol: str,
    published_at: datetime,
    *,
    sentiment: float | None = None,
    match_score: float | None = 20.0,
    source: str = "afr.com",
    description: str = "",
    language: str = "en",
    extra_entities: tuple[str, ...] = (),
    country: str = "au",
) -> dict[str, Any]:
    """One article in MarketAux's response shape."""

    def entity(sym: str, score: float | None, match: float | None) -> dict[str, Any]:
        return {
            "symbol": sym,
            "name": f"{sym.split('.')[0]} Ltd",
            "exchange": None,  # documented as sometimes null
            "exchange_long": None,
            "country": country,
            "type": "equity",
            "industry": "Financial Services",
            "match_score": match,
            "sentiment_score": score,
            "highlights": [
                {"highlight": f"<em>{sym}</em> {title}", "sentiment": score or 0.0, "highlighted_in": "title"}
            ],
        }

    return {
        "uuid": uuid,
        "title": title,
        "description": description,
        "keywords": "",
        "snippet": description[:60],
        "url": f"https://{source}/news/{uuid}",
        "image_url": None,
        "language": language,
        "published_at": published_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "source": source,
        "relevance_score": None,
        "entities": [entity(symbol, sentiment, match_score)] + [entity(s, 0.1, 5.0) for s in extra_entities],
        "similar": [],
    }


@dataclass
class Scripted:
    """One scripted answer: an HTTP error status, a raw body, or a connection-level failure."""

    status: int = 200
    body: bytes | None = None  # None: the documented error body for `status`
    headers: dict[str, str] = field(default_factory=dict)
    action: str = "respond"  # "respond" | "drop" (close without answering) | "hang"


class FakeMarketaux:
    """Threaded HTTP server on 127.0.0.1; `url` is its base URL."""

    def __init__(
        self, articles: list[dict[str, Any]] | None = None, *, token: str = TOKEN, daily_limit: int = 0
    ):
        self.articles = list(articles or [])
        self.token = token
        self.daily_limit = daily_limit  # 0: unlimited
        self.latency_s = 0.0  # added before every answer, so concurrent callers overlap
        self.script: deque[Scripted] = deque()
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()  # lets hung handlers finish at stop()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (which waits for the next poll) fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeMarketaux:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeMarketaux:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push(self, *answers: Scripted) -> None:
        self.script.extend(answers)

    @property
    def news_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/news/all"]

    # --- request handling (runs in server threads) ---

    def _answer(self, path: str, query: dict[str, str]) -> tuple[Scripted, Any]:
        with self._lock:
            self.requests.append({"path": path, "params": query})
            scripted = self.script.popleft() if self.script else None
            over_quota = self.daily_limit and len(self.requests) > self.daily_limit
        if scripted is not None:
            return scripted, None
        if path != "/v1/news/all":
            return Scripted(404), None
        if query.get("api_token") != self.token:
            return Scripted(401), None
        if over_quota:
            return Scripted(402, headers={"X-UsageLimit-Limit": str(self.daily_limit)}), None
        if not _valid_params(query):
            return Scripted(400), None
        return Scripted(200), self._news(query)

    def _news(self, query: dict[str, str]) -> dict[str, Any]:
        wanted = {s for s in query.get("symbols", "").split(",") if s}
        after = query.get("published_after")
        before = query.get("published_before")
        languages = set(query.get("language", "").split(",")) - {""}
        countries = set(query.get("countries", "").split(",")) - {""}
        matched = []
        for item in sorted(self.articles, key=lambda a: a["published_at"], reverse=True):
            symbols = {e["symbol"] for e in item["entities"]}
            if wanted and not wanted & symbols:
                continue
            if languages and item["language"] not in languages:
                continue
            if countries and not countries & {e["country"] for e in item["entities"]}:
                continue
            if after and item["published_at"][: len(after)] < after:
                continue
            if before and item["published_at"][: len(before)] > before:
                continue
            if query.get("filter_entities") == "true":
                item = {**item, "entities": [e for e in item["entities"] if e["symbol"] in wanted]}
            matched.append(item)
        limit = int(query.get("limit", 3))
        return {
            "meta": {"found": len(matched), "returned": min(limit, len(matched)), "limit": limit, "page": 1},
            "data": matched[:limit],
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                scripted, payload = fake._answer(parts.path, query)
                if fake.latency_s:
                    fake.release.wait(fake.latency_s)
                if scripted.action == "drop":
                    self.close_connection = True
                    return
                if scripted.action == "hang":
                    fake.release.wait(30)
                    return
                body = scripted.body
                if body is None:
                    body = json.dumps(payload if scripted.status == 200 else _error(scripted.status)).encode()
                self.send_response(scripted.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in scripted.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the default stderr access log (it would print the token)."""

        return Handler


def _error(status: int) -> dict[str, Any]:
    code, message = ERRORS.get(status, ("server_error", "A server error occurred."))
    return {"error": {"code": code, "message": message}}


def _valid_params(query: dict[str, str]) -> bool:
    for name in ("published_after", "published_before"):
        if name in query and not _DATE_RE.match(query[name]):
            return False
    limit = query.get("limit", "3")
    return limit.isdigit() and 1 <= int(limit) <= 100
