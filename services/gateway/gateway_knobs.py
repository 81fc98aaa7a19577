"""The gateway's knobs (TRADING_GATEWAY_*), read once at start.

Its bearer token is not a knob: it is a secret (TRADING_GATEWAY_TOKEN, in the environment or the
secrets file), else the token file in the data directory (gateway_service.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8780` for IPv6); port 0 lets the kernel choose (tests)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8780)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
    return host, int(port)


@dataclass(frozen=True, slots=True)
class GatewayKnobs:
    service: ClassVar[str] = "gateway"

    bind: tuple[str, int] = knob(
        ("127.0.0.1", 8780), parse=parse_bind, doc="HOST:PORT the HTTP gateway listens on (0.0.0.0 for all)"
    )
    rpc_timeout_s: float = knob(2.0, low=0.1, high=60, doc="one call to a service; past it that part is down")
    request_timeout_s: float = knob(
        10.0, low=0.5, high=300, doc="one HTTP request from its headers to its reply"
    )
    max_request_bytes: int = knob(
        16384, low=1024, high=1 << 20, doc="largest request body accepted (413 past it)"
    )
    max_header_bytes: int = knob(
        8190, low=1024, high=65536, doc="longest request line or header line (431 past it)"
    )
    idle_timeout_s: float = knob(
        30.0,
        low=1,
        high=3600,
        doc="an idle keep-alive connection, or one whose request head is not whole, is closed after this",
    )
    rate_limit_per_s: float = knob(
        20.0, low=0.1, high=100_000, doc="requests a second per client address on average (429 past it)"
    )
    rate_burst: int = knob(
        60, low=1, high=100_000, doc="requests per client address at once before the rate counts"
    )
    tls_cert_file: str = knob(
        "", doc="PEM certificate (chain) file: HTTPS instead of HTTP; needs TRADING_GATEWAY_TLS_KEY_FILE"
    )
    tls_key_file: str = knob("", doc="PEM private key file of the certificate (keep it chmod 600)")
    write: bool = knob(
        False,
        doc="serve the POST calls that change state (restart a service, run a task, place a paper trade);"
        " off: 403",
    )
