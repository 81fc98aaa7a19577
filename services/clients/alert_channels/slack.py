"""Slack-compatible incoming webhook: POST {"text": ...}; Slack answers 200 with the body `ok`.

Its errors are plain-text codes with a 4xx status (400 `invalid_payload`, 403
`action_prohibited`, 404 `no_service`, 410 `channel_is_archived`: not retried) or 429/5xx
(retried). The webhook URL is itself the credential, so it counts as a secret. Mattermost and
Rocket.Chat accept the same payload.
"""

from __future__ import annotations

from services.clients.alert_channels.channel import Message, http_post

SEVERITY_MARK = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


class SlackChannel:
    def __init__(self, webhook_url: str, timeout_s: float = 10.0, name: str = "slack"):
        self.name = name
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = (webhook_url,)

    async def send(self, message: Message) -> None:
        mark = SEVERITY_MARK.get(message.severity, "")
        text = (
            f"{mark} *{message.title}*\n{message.text}".strip()
            if message.text
            else f"{mark} *{message.title}*"
        )
        await http_post(
            self.name,
            self.webhook_url,
            timeout_s=self.timeout_s,
            secrets=self.secrets,
            json_body={"text": text},
        )
