"""Generic webhook: the message as a JSON POST, optionally signed with HMAC-SHA256.

With a secret, the header `X-Trading-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact
body bytes under that secret (as GitHub signs its webhooks), so the receiver can check that the
message came from the desk and was not altered. Any 2xx is acceptance.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from services.clients.alert_channels.channel import Message, http_post

SIGNATURE_HEADER = "X-Trading-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    def __init__(
        self, url: str, hmac_secret: str | None = None, timeout_s: float = 10.0, name: str = "webhook"
    ):
        self.name = name
        self.url = url
        self.hmac_secret = hmac_secret
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = (hmac_secret,) if hmac_secret else ()

    async def send(self, message: Message) -> None:
        body = orjson.dumps(message.as_json())
        headers = {"Content-Type": "application/json"}
        if self.hmac_secret:
            headers[SIGNATURE_HEADER] = signature(self.hmac_secret, body)
        await http_post(
            self.name, self.url, timeout_s=self.timeout_s, secrets=self.secrets, content=body, headers=headers
        )
