"""Which channels are set up, read from the environment or the secrets file.

Each channel has its variables; a channel is configured when any of them is set. A configured
channel whose variables are incomplete or malformed is not built: it is reported as a problem
naming the channel and the variable (the alerts process is then `degraded` and the other channels
still work). Values come from the environment first, then from `TRADING_SECRETS_FILE`; those in
SECRET_VARIABLES are credentials (services.base.config treats them as secrets: kept out of logs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.clients.alert_channels.channel import Channel
from services.clients.alert_channels.ntfy import NtfyChannel
from services.clients.alert_channels.slack import SlackChannel
from services.clients.alert_channels.smtp_email import SmtpChannel
from services.clients.alert_channels.telegram import DEFAULT_API_URL, TelegramChannel
from services.clients.alert_channels.webhook import WebhookChannel

#: channel name -> its variables, the first of which alone is enough to call it configured.
VARIABLES: Mapping[str, tuple[str, ...]] = {
    "webhook": ("TRADING_ALERTS_WEBHOOK_URL", "TRADING_ALERTS_WEBHOOK_SECRET"),
    "slack": ("TRADING_ALERTS_SLACK_WEBHOOK_URL",),
    "ntfy": ("TRADING_ALERTS_NTFY_URL", "TRADING_ALERTS_NTFY_TOKEN"),
    "telegram": (
        "TRADING_ALERTS_TELEGRAM_BOT_TOKEN",
        "TRADING_ALERTS_TELEGRAM_CHAT_ID",
        "TRADING_ALERTS_TELEGRAM_API_URL",
    ),
    "email": (
        "TRADING_ALERTS_SMTP_HOST",
        "TRADING_ALERTS_SMTP_PORT",
        "TRADING_ALERTS_SMTP_USERNAME",
        "TRADING_ALERTS_SMTP_PASSWORD",
        "TRADING_ALERTS_SMTP_FROM",
        "TRADING_ALERTS_SMTP_TO",
        "TRADING_ALERTS_SMTP_CA_FILE",
    ),
}
CHANNEL_NAMES = tuple(VARIABLES)
#: Credentials: never logged, never in health, errors or messages.
SECRET_VARIABLES = (
    "TRADING_ALERTS_WEBHOOK_SECRET",
    "TRADING_ALERTS_SLACK_WEBHOOK_URL",
    "TRADING_ALERTS_NTFY_TOKEN",
    "TRADING_ALERTS_TELEGRAM_BOT_TOKEN",
    "TRADING_ALERTS_SMTP_PASSWORD",
)


class ChannelMisconfigured(ValueError):
    """A channel's variable is missing or malformed: fix the variable named."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable} {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ChannelSetup:
    channels: Mapping[str, Channel] = field(default_factory=dict)
    #: channel -> "VARIABLE problem" for each channel that is configured but cannot be built.
    problems: Mapping[str, str] = field(default_factory=dict)

    @property
    def configured(self) -> tuple[str, ...]:
        return tuple(n for n in CHANNEL_NAMES if n in self.channels or n in self.problems)


def lookup_from(environ: Mapping[str, str], secrets: Mapping[str, str]) -> Callable[[str], str | None]:
    """A variable's value: the environment first, then the secrets file; blank is unset."""

    def lookup(name: str) -> str | None:
        value = (environ.get(name) or "").strip() or (secrets.get(name) or "").strip()
        return value or None

    return lookup


def channels_from(
    environ: Mapping[str, str], secrets: Mapping[str, str], timeout_s: float = 10.0
) -> ChannelSetup:
    """Every configured channel built, or its problem; never raises for a bad channel."""
    lookup = lookup_from(environ, secrets)
    channels: dict[str, Channel] = {}
    problems: dict[str, str] = {}
    for name, variables in VARIABLES.items():
        if not any(lookup(v) for v in variables):
            continue
        try:
            channels[name] = BUILDERS[name](lookup, timeout_s)
        except ChannelMisconfigured as exc:
            problems[name] = str(exc)
    return ChannelSetup(channels, problems)


def _required(lookup: Callable[[str], str | None], variable: str) -> str:
    value = lookup(variable)
    if value is None:
        raise ChannelMisconfigured(variable, "is not set")
    return value


def _url(lookup: Callable[[str], str | None], variable: str, default: str | None = None) -> str:
    """An http(s) URL with a host; the value is not repeated in the problem (it may be a secret)."""
    value = lookup(variable) or default
    if value is None:
        raise ChannelMisconfigured(variable, "is not set")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelMisconfigured(variable, "is not an http(s) URL with a host")
    return value


def _webhook(lookup, timeout_s: float) -> Channel:
    return WebhookChannel(
        _url(lookup, "TRADING_ALERTS_WEBHOOK_URL"), lookup("TRADING_ALERTS_WEBHOOK_SECRET"), timeout_s
    )


def _slack(lookup, timeout_s: float) -> Channel:
    return SlackChannel(_url(lookup, "TRADING_ALERTS_SLACK_WEBHOOK_URL"), timeout_s)


def _ntfy(lookup, timeout_s: float) -> Channel:
    url = _url(lookup, "TRADING_ALERTS_NTFY_URL")
    if urlsplit(url).path.strip("/") == "":
        raise ChannelMisconfigured("TRADING_ALERTS_NTFY_URL", "names no topic (e.g. https://ntfy.sh/my-desk)")
    return NtfyChannel(url, lookup("TRADING_ALERTS_NTFY_TOKEN"), timeout_s)


def _telegram(lookup, timeout_s: float) -> Channel:
    token = _required(lookup, "TRADING_ALERTS_TELEGRAM_BOT_TOKEN")
    if ":" not in token or "/" in token:
        raise ChannelMisconfigured("TRADING_ALERTS_TELEGRAM_BOT_TOKEN", "is not a bot token (<id>:<secret>)")
    chat_id = _required(lookup, "TRADING_ALERTS_TELEGRAM_CHAT_ID")
    api_url = _url(lookup, "TRADING_ALERTS_TELEGRAM_API_URL", DEFAULT_API_URL)
    return TelegramChannel(token, chat_id, api_url, timeout_s)


def _email(lookup, timeout_s: float) -> Channel:
    host = _required(lookup, "TRADING_ALERTS_SMTP_HOST")
    port_text = lookup("TRADING_ALERTS_SMTP_PORT") or "587"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ChannelMisconfigured("TRADING_ALERTS_SMTP_PORT", "is not a port number (1..65535)")
    sender = _required(lookup, "TRADING_ALERTS_SMTP_FROM")
    recipients = tuple(r.strip() for r in _required(lookup, "TRADING_ALERTS_SMTP_TO").split(",") if r.strip())
    for variable, addresses in (
        ("TRADING_ALERTS_SMTP_FROM", (sender,)),
        ("TRADING_ALERTS_SMTP_TO", recipients),
    ):
        if not addresses or any("@" not in a for a in addresses):
            raise ChannelMisconfigured(variable, "is not a list of email addresses")
    username, password = lookup("TRADING_ALERTS_SMTP_USERNAME"), lookup("TRADING_ALERTS_SMTP_PASSWORD")
    if username and not password:
        raise ChannelMisconfigured(
            "TRADING_ALERTS_SMTP_PASSWORD", "is not set (TRADING_ALERTS_SMTP_USERNAME is)"
        )
    ca_file = lookup("TRADING_ALERTS_SMTP_CA_FILE")
    if ca_file and not Path(ca_file).is_file():
        raise ChannelMisconfigured("TRADING_ALERTS_SMTP_CA_FILE", "is not a readable file")
    return SmtpChannel(host, int(port_text), sender, recipients, username, password, ca_file, timeout_s)


BUILDERS: Mapping[str, Callable[[Callable[[str], str | None], float], Channel]] = {
    "webhook": _webhook,
    "slack": _slack,
    "ntfy": _ntfy,
    "telegram": _telegram,
    "email": _email,
}
