"""Channels that carry an alert to a person: a generic webhook (optional HMAC signature), a
Slack-compatible incoming webhook, ntfy, Telegram's Bot API and email over SMTP with STARTTLS.

One module each, one interface (`channel.Channel`: `name`, `secrets`, `async send(Message)`),
configured from the environment or the secrets file (`config.channels_from`). Used by the alerts
process and, when that process is itself down, by the supervisor and the CLI, so an alert about
the alert path still goes out through the same code.
"""

from services.clients.alert_channels.channel import (
    SEVERITIES,
    Channel,
    ChannelFailure,
    DeliveryReport,
    Message,
    redact,
    send_with_retries,
)
from services.clients.alert_channels.config import (
    CHANNEL_NAMES,
    SECRET_VARIABLES,
    VARIABLES,
    ChannelSetup,
    channels_from,
)

__all__ = [
    "CHANNEL_NAMES",
    "SECRET_VARIABLES",
    "SEVERITIES",
    "VARIABLES",
    "Channel",
    "ChannelFailure",
    "ChannelSetup",
    "DeliveryReport",
    "Message",
    "channels_from",
    "redact",
    "send_with_retries",
]
