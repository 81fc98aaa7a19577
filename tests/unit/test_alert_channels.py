"""Each alert channel against a local fake that speaks its protocol; retries and secrets.

The HTTP channels talk to `FakeHttpEndpoint` (a real HTTP server on 127.0.0.1), email to aiosmtpd
with STARTTLS and a self-signed certificate made for the test. Backoff waits go through an
injected `sleep` that records them, so no test sleeps.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from services.base.config import SECRET_KEYS
from services.clients.alert_channels import (
    SECRET_VARIABLES,
    Message,
    channels_from,
    send_with_retries,
)
from services.clients.alert_channels.ntfy import NtfyChannel
from services.clients.alert_channels.slack import SlackChannel
from services.clients.alert_channels.smtp_email import SmtpChannel
from services.clients.alert_channels.telegram import TelegramChannel
from services.clients.alert_channels.webhook import SIGNATURE_HEADER, WebhookChannel
from tests.alert_fakes import (
    FakeHttpEndpoint,
    FakeSmtpServer,
    Reply,
    free_port,
    self_signed_cert,
    telegram_error,
    telegram_ok,
)

MESSAGE = Message(
    title="paper-trading is fatal",
    text="5 failures within 300s; last: exited unexpectedly (code 1)",
    severity="critical",
    kind="service_fatal",
    subject="paper-trading",
    at="2026-11-30T10:15:00+11:00",
    incident_id=7,
)
TOKEN = "123456:AAE-secret-bot-token"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def endpoint():
    with FakeHttpEndpoint() as fake:
        yield fake


# ---- generic webhook ------------------------------------------------------------------------------


async def test_webhook_posts_the_message_as_json_signed_with_hmac(endpoint):
    channel = WebhookChannel(f"{endpoint.url}/hook", hmac_secret="hmac-key-123")
    report = await send_with_retries(channel, MESSAGE)
    assert report.ok and report.attempts == 1
    (request,) = endpoint.received()
    assert request.path == "/hook"
    body = request.json()
    assert body["kind"] == "service_fatal" and body["severity"] == "critical" and body["incident_id"] == 7
    assert body["title"] == MESSAGE.title and body["state"] == "open"
    expected = "sha256=" + hmac.new(b"hmac-key-123", request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    assert "hmac-key-123" not in request.body.decode()


async def test_webhook_without_a_secret_sends_no_signature(endpoint):
    assert (await send_with_retries(WebhookChannel(endpoint.url), MESSAGE)).ok
    assert SIGNATURE_HEADER not in endpoint.received()[0].headers


async def test_5xx_and_429_are_retried_with_backoff_then_delivered(endpoint):
    endpoint.then(Reply(503, b"busy"), Reply(429, b"slow down", {"Retry-After": "7"}))
    sleeps = Sleeps()
    report = await send_with_retries(
        WebhookChannel(endpoint.url), MESSAGE, attempts=4, base_s=0.5, sleep=sleeps
    )
    assert report.ok and report.attempts == 3
    assert len(endpoint.received()) == 3
    assert sleeps.waits == [0.5, 7.0]  # doubling backoff; Retry-After honoured (above the backoff)


async def test_a_channel_that_stays_down_is_reported_failed_and_retryable(endpoint):
    endpoint.default = Reply(500, b"internal error")
    sleeps = Sleeps()
    report = await send_with_retries(
        WebhookChannel(endpoint.url), MESSAGE, attempts=3, base_s=1, sleep=sleeps
    )
    assert not report.ok and report.retryable and report.attempts == 3 and report.status == 500
    assert sleeps.waits == [1, 2]
    assert report.error == "webhook: HTTP 500: internal error"


async def test_a_4xx_is_not_retried(endpoint):
    endpoint.default = Reply(403, b"forbidden")
    report = await send_with_retries(WebhookChannel(endpoint.url), MESSAGE, attempts=5, sleep=Sleeps())
    assert not report.ok and not report.retryable and report.attempts == 1 and report.status == 403
    assert len(endpoint.received()) == 1


async def test_a_refused_connection_is_a_retryable_network_error():
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sleeps = Sleeps()
    report = await send_with_retries(WebhookChannel(url), MESSAGE, attempts=2, sleep=sleeps)
    assert not report.ok and report.retryable and report.attempts == 2
    assert report.error == "webhook: network error (ConnectionRefusedError)"


# ---- Slack ------------------------------------------------------------------------------------------


async def test_slack_posts_text_to_the_incoming_webhook(endpoint):
    url = f"{endpoint.url}/services/T000/B000/XXXXsecretXXXX"
    assert (await send_with_retries(SlackChannel(url), MESSAGE)).ok
    body = endpoint.received()[0].json()
    assert set(body) == {"text"}
    assert MESSAGE.title in body["text"] and MESSAGE.text in body["text"]


async def test_slack_no_service_is_not_retried_and_the_url_is_never_reported(endpoint):
    url = f"{endpoint.url}/services/T000/B000/XXXXsecretXXXX"
    endpoint.default = Reply(404, f"no_service {url}".encode())  # even an echo of the URL is cut
    report = await send_with_retries(SlackChannel(url), MESSAGE, attempts=3, sleep=Sleeps())
    assert not report.ok and report.attempts == 1
    assert "XXXXsecretXXXX" not in (report.error or "") and "no_service" in (report.error or "")


# ---- ntfy -------------------------------------------------------------------------------------------


async def test_ntfy_posts_the_text_with_title_priority_tags_and_token(endpoint):
    endpoint.default = Reply(200, b'{"id":"abc","event":"message"}')
    channel = NtfyChannel(f"{endpoint.url}/desk-alerts", token="tk_ntfysecret")
    warning = Message(title="Disk nearly full — /data", text="4% free", severity="warning", kind="disk_low")
    assert (await send_with_retries(channel, warning)).ok
    request = endpoint.received()[0]
    assert request.path == "/desk-alerts" and request.body == b"4% free"
    assert request.headers["Priority"] == "4" and request.headers["Tags"] == "warning,disk_low"
    assert request.headers["Authorization"] == "Bearer tk_ntfysecret"
    assert request.headers["Title"].startswith("=?utf-8?")  # RFC 2047 for the dash


# ---- Telegram ---------------------------------------------------------------------------------------


async def test_telegram_send_message(endpoint):
    endpoint.default = telegram_ok()
    channel = TelegramChannel(TOKEN, "42", api_url=endpoint.url)
    assert (await send_with_retries(channel, MESSAGE)).ok
    request = endpoint.received()[0]
    assert request.path == f"/bot{TOKEN}/sendMessage"
    assert request.json()["chat_id"] == "42" and request.json()["text"].startswith(MESSAGE.title)


async def test_telegram_bad_token_is_not_retried_and_the_token_stays_secret(endpoint):
    endpoint.default = telegram_error(401, "Unauthorized")
    report = await send_with_retries(
        TelegramChannel(TOKEN, "42", api_url=endpoint.url), MESSAGE, sleep=Sleeps()
    )
    assert not report.ok and report.attempts == 1 and report.status == 401
    assert report.error == "telegram: HTTP 401: Unauthorized"


async def test_telegram_429_waits_retry_after(endpoint):
    endpoint.default = telegram_ok()
    endpoint.then(telegram_error(429, "Too Many Requests: retry after 3", retry_after=3))
    sleeps = Sleeps()
    report = await send_with_retries(
        TelegramChannel(TOKEN, "42", api_url=endpoint.url), MESSAGE, base_s=0.1, sleep=sleeps
    )
    assert report.ok and report.attempts == 2 and sleeps.waits == [3.0]


async def test_telegram_ok_false_in_a_200_is_a_failure(endpoint):
    endpoint.default = Reply(200, b'{"ok": false, "description": "odd"}')
    report = await send_with_retries(
        TelegramChannel(TOKEN, "42", api_url=endpoint.url), MESSAGE, sleep=Sleeps()
    )
    assert not report.ok and report.attempts == 1


# ---- email ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("smtp"))


def smtp_channel(port: int, cert, password: str = "s3cret-pass") -> SmtpChannel:
    return SmtpChannel(
        "127.0.0.1", port, "desk@example.org", ("me@example.org", "you@example.org"),
        username="desk", password=password, ca_file=str(cert[0]), timeout_s=10,
    )  # fmt: skip


async def test_email_over_starttls_with_login(certificate):
    with FakeSmtpServer(*certificate) as server:
        report = await send_with_retries(smtp_channel(server.port, certificate), MESSAGE)
        assert report.ok, report.error
    (mail,) = server.messages
    assert server.envelopes == [("desk@example.org", ["me@example.org", "you@example.org"])]
    assert mail["Subject"] == "[critical] paper-trading is fatal"
    assert mail["X-Trading-Kind"] == "service_fatal"
    assert MESSAGE.text in mail.get_payload(decode=True).decode()


async def test_email_refused_login_is_not_retried_and_the_password_never_shows(certificate):
    with FakeSmtpServer(*certificate) as server:
        report = await send_with_retries(
            smtp_channel(server.port, certificate, password="wrong-password"), MESSAGE, sleep=Sleeps()
        )
    assert not report.ok and report.attempts == 1 and report.status == 535
    assert "wrong-password" not in (report.error or "")
    assert server.messages == []


async def test_email_refuses_a_certificate_it_does_not_trust(certificate, tmp_path):
    other = self_signed_cert(tmp_path)  # another self-signed certificate: not the server's
    with FakeSmtpServer(*certificate) as server:
        channel = smtp_channel(server.port, other)
        report = await send_with_retries(channel, MESSAGE, sleep=Sleeps())
    assert not report.ok and not report.retryable and "not trusted" in (report.error or "")


async def test_email_server_down_is_retried(certificate):
    sleeps = Sleeps()
    report = await send_with_retries(
        smtp_channel(free_port(), certificate), MESSAGE, attempts=3, sleep=sleeps
    )
    assert not report.ok and report.retryable and report.attempts == 3 and len(sleeps.waits) == 2


# ---- configuration ----------------------------------------------------------------------------------


def test_channels_are_built_from_the_environment_and_the_secrets_file(certificate):
    environ = {
        "TRADING_ALERTS_WEBHOOK_URL": "https://hooks.example.org/desk",
        "TRADING_ALERTS_NTFY_URL": "https://ntfy.sh/desk",
        "TRADING_ALERTS_TELEGRAM_CHAT_ID": "42",
        "TRADING_ALERTS_SMTP_HOST": "smtp.example.org",
        "TRADING_ALERTS_SMTP_FROM": "desk@example.org",
        "TRADING_ALERTS_SMTP_TO": "me@example.org",
        "TRADING_ALERTS_SMTP_USERNAME": "desk",
    }
    secrets = {"TRADING_ALERTS_TELEGRAM_BOT_TOKEN": TOKEN, "TRADING_ALERTS_SMTP_PASSWORD": "pw-1234"}
    setup = channels_from(environ, secrets)
    assert set(setup.channels) == {"webhook", "ntfy", "telegram", "email"} and not setup.problems
    assert setup.configured == ("webhook", "ntfy", "telegram", "email")


@pytest.mark.parametrize(
    ("environ", "channel", "problem"),
    [
        (
            {"TRADING_ALERTS_WEBHOOK_URL": "hooks.example.org"},
            "webhook",
            "TRADING_ALERTS_WEBHOOK_URL is not an",
        ),
        # the HMAC secret alone: the channel is meant, its URL is missing
        ({"TRADING_ALERTS_WEBHOOK_SECRET": "k"}, "webhook", "TRADING_ALERTS_WEBHOOK_URL is not set"),
        (
            {"TRADING_ALERTS_TELEGRAM_BOT_TOKEN": TOKEN},
            "telegram",
            "TRADING_ALERTS_TELEGRAM_CHAT_ID is not set",
        ),
        (
            {"TRADING_ALERTS_TELEGRAM_CHAT_ID": "1"},
            "telegram",
            "TRADING_ALERTS_TELEGRAM_BOT_TOKEN is not set",
        ),
        ({"TRADING_ALERTS_NTFY_URL": "https://ntfy.sh/"}, "ntfy", "TRADING_ALERTS_NTFY_URL names no topic"),
        (
            {"TRADING_ALERTS_SMTP_HOST": "h", "TRADING_ALERTS_SMTP_TO": "x@y"},
            "email",
            "TRADING_ALERTS_SMTP_FROM",
        ),
        (
            {"TRADING_ALERTS_SMTP_HOST": "h", "TRADING_ALERTS_SMTP_PORT": "99999"},
            "email",
            "TRADING_ALERTS_SMTP_PORT is not a port",
        ),
    ],
)
def test_a_misconfigured_channel_is_a_problem_naming_its_variable(environ, channel, problem):
    good = {"TRADING_ALERTS_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/secretpart"}
    setup = channels_from({**environ, **good}, {})
    assert setup.problems[channel].startswith(problem)
    assert channel not in setup.channels and "slack" in setup.channels  # the others still work


def test_a_secret_url_is_never_repeated_in_a_problem():
    setup = channels_from({"TRADING_ALERTS_SLACK_WEBHOOK_URL": "ftp://secretpart-xyz"}, {})
    assert "secretpart" not in setup.problems["slack"]


def test_the_channels_credentials_are_the_suites_secrets():
    assert set(SECRET_VARIABLES) <= set(SECRET_KEYS)  # kept out of every log line by the framework
