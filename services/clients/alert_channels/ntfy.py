"""ntfy (ntfy.sh or a self-hosted server): POST the text to the topic's URL.

The title, priority (critical 5 `urgent`, warning 4 `high`, info 3 `default`) and tags travel in
headers, as ntfy documents; a header that is not plain ASCII is sent RFC 2047-encoded, which ntfy
decodes. An access token, when set, goes in `Authorization: Bearer`.
"""

from __future__ import annotations

from email.header import Header

from services.clients.alert_channels.channel import Message, http_post

PRIORITY = {"info": "3", "warning": "4", "critical": "5"}
TAGS = {"info": "information_source", "warning": "warning", "critical": "rotating_light"}


def header_value(text: str) -> str:
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return Header(text, "utf-8").encode()
    return text


class NtfyChannel:
    def __init__(self, topic_url: str, token: str | None = None, timeout_s: float = 10.0, name: str = "ntfy"):
        self.name = name
        self.topic_url = topic_url
        self.token = token
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = (token,) if token else ()

    async def send(self, message: Message) -> None:
        headers = {
            "Title": header_value(" ".join(message.title.split())),
            "Priority": PRIORITY.get(message.severity, "3"),
            "Tags": f"{TAGS.get(message.severity, 'bell')},{message.kind}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        await http_post(
            self.name,
            self.topic_url,
            timeout_s=self.timeout_s,
            secrets=self.secrets,
            content=(message.text or message.title).encode(),
            headers=headers,
        )
