"""Alerts sent without the alerts process: the path for when that process, or everything, is down.

The supervisor sends through here when the alerts process turns fatal (it restarts that process,
so it is the one that knows), the CLI's `alerts test` when the process is not running, and
`alerts notify` (what systemd's `OnFailure=` unit runs when the whole suite failed). The same
channel code as the alerts process (services/clients/alert_channels), configured from the same
variables; nothing is recorded in alerts.db (its owner is down), so the result is returned (and
logged by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.base import Settings
from services.clients.alert_channels import DeliveryReport, Message, channels_from, send_with_retries


async def send_direct(
    settings: Settings,
    message: Message,
    channel: str | None = None,
    *,
    attempts: int = 3,
    timeout_s: float = 10.0,
) -> Mapping[str, DeliveryReport]:
    """Send `message` to `channel` (or every configured one): each channel's report. A channel
    that is misconfigured gets a failed report naming its variable."""
    setup = channels_from(settings.environ, settings.secrets, timeout_s)
    names = [channel] if channel else list(setup.configured)
    reports: dict[str, DeliveryReport] = {}
    for name in names:
        if name in setup.problems:
            reports[name] = DeliveryReport(False, 0, f"misconfigured: {setup.problems[name]}")
        elif name not in setup.channels:
            reports[name] = DeliveryReport(False, 0, f"{name} is not configured")
        else:
            reports[name] = await send_with_retries(setup.channels[name], message, attempts=attempts)
    return reports
