"""The one interface every alert channel has, and the retry loop shared by all of them.

A channel is an object with a `name` and `async send(message)` that returns when the far end
accepted the message and raises `ChannelFailure` when it did not, saying whether trying again can
help (`retryable`: 429, 5xx, a network error or timeout) or not (another 4xx: a bad token, a
wrong chat, an archived channel; SMTP's 5xx replies). `send_with_retries` retries the retryable
failures with exponential backoff (honouring a server's Retry-After, capped) and returns a
`DeliveryReport`; it never raises for a channel's failure, so a caller always has a record.

Secrets: a channel knows its secret values (`secrets`); every detail it reports passes through
`redact`, and failures never carry a URL (Telegram's holds the bot token, Slack's is itself the
credential).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from services.base.redaction import redact as redact_secrets
from services.base.redaction import secret_list

SEVERITIES = ("info", "warning", "critical")
#: What a message says about its incident: opened, repeated (a grouped count), resolved, a
#: summary, a digest of held messages, or a test.
MESSAGE_STATES = ("open", "repeat", "resolved", "summary", "digest", "test")
USER_AGENT = "asx-trading-desk-alerts/1"


@dataclass(frozen=True, slots=True)
class Message:
    """One notification, the same for every channel (each renders it its own way)."""

    title: str
    text: str
    severity: str = "warning"
    kind: str = "alert"
    state: str = "open"
    subject: str = ""
    at: str = ""  # ISO-8601 instant, by the suite clock
    incident_id: int | None = None
    count: int = 1

    def plain(self) -> str:
        """Title and text as one plain-text body (Slack, Telegram, email)."""
        return f"{self.title}\n{self.text}" if self.text else self.title

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "asx-trading-desk",
            "kind": self.kind,
            "state": self.state,
            "severity": self.severity,
            "subject": self.subject,
            "title": self.title,
            "text": self.text,
            "at": self.at,
            "incident_id": self.incident_id,
            "count": self.count,
        }


class ChannelFailure(Exception):
    """The channel did not accept the message. `detail` is safe to log and store (no secret)."""

    def __init__(
        self, detail: str, *, retryable: bool, status: int | None = None, retry_after_s: float | None = None
    ):
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    name: str
    #: The values that must never appear in a message, a log line or a stored error.
    secrets: tuple[str, ...]

    async def send(self, message: Message) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The outcome of one delivery after its retries."""

    ok: bool
    attempts: int
    error: str | None = None
    retryable: bool = False  # the last failure could pass on a later try (the channel was down)
    status: int | None = None


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` without the secret values and without credentials in any URL it quotes."""
    return redact_secrets(text, secret_list(secrets))


def backoff_s(failures: int, base_s: float, max_s: float) -> float:
    """base, 2*base, 4*base ... capped: the wait after the `failures`-th failure (1-based)."""
    return min(max_s, base_s * 2 ** max(0, failures - 1))


async def send_with_retries(
    channel: Channel,
    message: Message,
    *,
    attempts: int = 3,
    base_s: float = 1.0,
    max_s: float = 30.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> DeliveryReport:
    """Send, retrying retryable failures up to `attempts` tries in all; never raises for the
    channel's failure (an unexpected exception in a channel is reported as a failure too)."""
    failure: ChannelFailure | None = None
    for attempt in range(1, attempts + 1):
        try:
            await channel.send(message)
            return DeliveryReport(ok=True, attempts=attempt)
        except ChannelFailure as exc:
            failure = exc
        except Exception as exc:  # a bug in a channel must not lose the record of the delivery
            failure = ChannelFailure(redact(f"{type(exc).__name__}: {exc}", channel.secrets), retryable=False)
        if not failure.retryable or attempt == attempts:
            break
        wait = backoff_s(attempt, base_s, max_s)
        if failure.retry_after_s is not None:
            wait = min(max_s, max(wait, failure.retry_after_s))
        await sleep(wait)
    assert failure is not None
    return DeliveryReport(
        ok=False,
        attempts=attempt,
        error=redact(failure.detail, channel.secrets),
        retryable=failure.retryable,
        status=failure.status,
    )


# ---- HTTP, shared by the HTTP channels -----------------------------------------------------------


async def http_post(
    channel: str,
    url: str,
    *,
    timeout_s: float,
    secrets: Iterable[str] = (),
    json_body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One POST, classified: (status, body) of a 2xx answer, else ChannelFailure. The URL is never
    part of a failure's detail, and the answer's text is redacted.

    The standard library's http.client in a thread, not httpx: an alert is one small request now
    and then, and httpx with its dependencies would add some 7 MB to the process once loaded."""
    body = orjson.dumps(json_body) if json_body is not None else (content or b"")
    sent_headers = {"User-Agent": USER_AGENT, "Content-Length": str(len(body)), **(headers or {})}
    if json_body is not None:
        sent_headers.setdefault("Content-Type", "application/json")
    try:
        status, answer, retry_after = await asyncio.to_thread(_post, url, body, sent_headers, timeout_s)
    except TimeoutError:
        raise ChannelFailure(f"{channel}: no answer within {timeout_s:g}s", retryable=True) from None
    except (OSError, HTTPException) as exc:  # refused, DNS, reset, TLS; the URL is left out
        raise ChannelFailure(f"{channel}: network error ({type(exc).__name__})", retryable=True) from None
    if 200 <= status < 300:
        return status, answer
    text = redact(" ".join(answer[:200].decode(errors="replace").split()), secrets)
    raise ChannelFailure(
        f"{channel}: HTTP {status}{': ' + text if text else ''}",
        retryable=status == 429 or status >= 500,
        status=status,
        retry_after_s=_retry_after(retry_after),
    )


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, bytes, str | None]:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        connection: HTTPConnection = HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        connection = HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(64 * 1024), response.getheader("Retry-After")
    finally:
        connection.close()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides instead
