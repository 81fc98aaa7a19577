"""Telegram Bot API: POST {api}/bot<token>/sendMessage with {"chat_id", "text"}.

Telegram answers `{"ok": true, "result": {...}}`, or `{"ok": false, "error_code", "description"}`
with the same HTTP status (400 a bad chat id, 401 a bad token, 403 the bot was blocked: not
retried; 429 with `parameters.retry_after`: retried after that long). The token is part of the
URL path, so neither the URL nor the token ever appears in a failure. Texts over Telegram's 4096
characters are cut.
"""

from __future__ import annotations

import orjson

from services.clients.alert_channels.channel import ChannelFailure, Message, http_post

DEFAULT_API_URL = "https://api.telegram.org"
MAX_TEXT = 4096


class TelegramChannel:
    def __init__(
        self,
        bot_token: str,
        chat_id: str,
        api_url: str = DEFAULT_API_URL,
        timeout_s: float = 10.0,
        name: str = "telegram",
    ):
        self.name = name
        self.bot_token = bot_token
        self.chat_id = chat_id
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = (bot_token,)

    async def send(self, message: Message) -> None:
        text = message.plain()
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        url = f"{self.api_url}/bot{self.bot_token}/sendMessage"
        try:
            _, body = await http_post(
                self.name,
                url,
                timeout_s=self.timeout_s,
                secrets=self.secrets,
                json_body={"chat_id": self.chat_id, "text": text, "disable_web_page_preview": True},
            )
        except ChannelFailure as exc:
            raise _with_description(exc) from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ChannelFailure(f"{self.name}: the answer is not JSON", retryable=True) from None
        if not (isinstance(answer, dict) and answer.get("ok") is True):
            raise ChannelFailure(f"{self.name}: the answer is not ok", retryable=False)


def _with_description(failure: ChannelFailure) -> ChannelFailure:
    """Telegram's JSON error, read: its description, and retry_after on a 429."""
    detail, _, body = failure.detail.partition(": {")
    retry_after = failure.retry_after_s
    if body:
        try:
            answer = orjson.loads("{" + body)
            description = answer.get("description")
            retry_after = (answer.get("parameters") or {}).get("retry_after", retry_after)
            detail = f"{detail}: {description}" if description else failure.detail
        except (orjson.JSONDecodeError, AttributeError):
            detail = failure.detail
    return ChannelFailure(
        detail,
        retryable=failure.retryable,
        status=failure.status,
        retry_after_s=float(retry_after) if isinstance(retry_after, int | float) else None,
    )
