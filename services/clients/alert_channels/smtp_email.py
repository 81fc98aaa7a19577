"""Email over SMTP with STARTTLS (RFC 3207), sent with the standard library in a thread.

The client says EHLO, upgrades with STARTTLS (a server that does not offer it is refused: the
password would cross in clear), says EHLO again, logs in when a user is set, and sends. The
server's certificate is checked against the system's CAs, or against `ca_file` (a private CA or a
self-signed server). Replies: 4xx is transient (retried), 5xx permanent (535 a refused login, 550
a refused recipient: not retried); a refused connection, a timeout or a dropped line is retried.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from services.clients.alert_channels.channel import ChannelFailure, Message


class SmtpChannel:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: tuple[str, ...],
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        name: str = "email",
    ):
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = recipients
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = (password,) if password else ()

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Subject"] = f"[{message.severity}] {' '.join(message.title.split())}"
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain="asx-trading-desk")
        mail["X-Trading-Kind"] = message.kind
        mail.set_content(message.text or message.title)
        return mail

    async def send(self, message: Message) -> None:
        await asyncio.to_thread(self._send, self.build(message))

    def _send(self, mail: EmailMessage) -> None:
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ChannelFailure(f"{self.name}: cannot read the CA file ({exc})", retryable=False) from None
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise ChannelFailure(f"{self.name}: the server offers no STARTTLS", retryable=False)
                smtp.starttls(context=context)
                smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(mail)
        except ChannelFailure:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise ChannelFailure(
                f"{self.name}: recipients refused ({', '.join(map(str, codes))})",
                retryable=all(400 <= c < 500 for c in codes),
                status=codes[0] if codes else None,
            ) from None
        except smtplib.SMTPResponseException as exc:  # a reply code: 4xx transient, 5xx permanent
            reply = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise ChannelFailure(
                f"{self.name}: SMTP {exc.smtp_code} {' '.join(reply.split())[:160]}",
                retryable=400 <= exc.smtp_code < 500,
                status=exc.smtp_code,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ChannelFailure(
                f"{self.name}: the server's certificate is not trusted ({exc.verify_message})",
                retryable=False,
            ) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:  # refused, timeout, dropped
            raise ChannelFailure(f"{self.name}: {type(exc).__name__}: {exc}", retryable=True) from None
