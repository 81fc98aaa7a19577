"""Local fakes of the alert channels' far ends, speaking their documented protocols.

- `FakeHttpEndpoint`: an HTTP server on 127.0.0.1 (a thread) that records every POST (path,
  headers, body) and answers from a script: a queue of (status, body, headers) replies, then the
  default. It stands in for a generic webhook receiver, Slack's incoming webhooks, an ntfy
  server and Telegram's Bot API (whose replies the tests script as Telegram documents them).
- `FakeSmtpServer`: aiosmtpd on 127.0.0.1 with STARTTLS required before AUTH and MAIL, a
  self-signed certificate made by `openssl` for the test, and a login it accepts; it keeps the
  messages it accepted.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FakeHttpEndpoint:
    """`with FakeHttpEndpoint(default=Reply(200, b"ok")) as fake: fake.url ...`"""

    def __init__(self, default: Reply | None = None):
        self.default = default or Reply(200, b"ok")
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with fake._lock:
                    fake.requests.append(Recorded(self.path, dict(self.headers.items()), body))
                    reply = fake.script.popleft() if fake.script else fake.default
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:  # quiet in test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def then(self, *replies: Reply) -> FakeHttpEndpoint:
        with self._lock:
            self.script.extend(replies)
        return self

    def received(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> FakeHttpEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def telegram_ok(chat_id: str = "42") -> Reply:
    return Reply(200, orjson.dumps({"ok": True, "result": {"message_id": 1, "chat": {"id": int(chat_id)}}}))


def telegram_error(status: int, description: str, retry_after: int | None = None) -> Reply:
    answer: dict = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        answer["parameters"] = {"retry_after": retry_after}
    return Reply(status, orjson.dumps(answer), {"Content-Type": "application/json"})


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) for `host`, made by the openssl command line for this test."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeSmtpServer:
    """aiosmtpd with STARTTLS (required) and one login; `.messages` holds what it accepted."""

    def __init__(self, cert: Path, key: Path, username: str = "desk", password: str = "s3cret-pass"):
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        fake = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                fake.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                fake.messages.append(message_from_bytes(envelope.content))
                return "250 Message accepted for delivery"

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == username
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=free_port(),  # aiosmtpd's start-up probe connects to the port it was given: not 0
            tls_context=context,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=authenticate,
        )

    @property
    def port(self) -> int:
        return self.controller.port

    def __enter__(self) -> FakeSmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.controller.stop()
