"""Shared parts of the gateway's system tests (test_gateway.py, test_gateway_write.py): a suite
started through the manager CLI whose gateway the tests drive over HTTP, a client holding the
token, and the header schemathesis's generated cases are sent with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
from schemathesis.core.parameters import ParameterLocation

from tests.support import Processes, SuiteDirs, install_models, rpc_call_sync
from tests.system.test_manager import FAST_TIMERS

# In a session, whatever the wall clock says (quotes exist from 10:01 Sydney only).
IN_SESSION = "2024-06-18T11:00:00+10:00"


@contextlib.contextmanager
def gateway_desk(
    prefix: str,
    token: str,
    *,
    models: Path | None = None,
    symbols: Iterable[str] | None = None,
    **overrides: str,
) -> Iterator[SuiteDirs]:
    """A whole suite (`service_manager.py start`) with fast supervisor timers, the gateway's
    `token`, a clock mid-session and `overrides`; the `models` of `symbols` installed before it
    starts. Stopped and its directories removed on leaving, whatever happened."""
    with Processes() as processes:
        dirs = processes.suite_dirs(
            prefix,
            **FAST_TIMERS,
            TRADING_GATEWAY_TOKEN=token,
            # The tests ask faster than a browser would: the rate limit has its own test.
            TRADING_GATEWAY_RATE_BURST="100000",
            TRADING_CLOCK_START=IN_SESSION,
            **overrides,
        )
        if models is not None:
            install_models(models, dirs.models_dir, symbols)
        processes.start_suite(dirs)
        yield dirs


@contextlib.contextmanager
def gateway_client(dirs: SuiteDirs, token: str) -> Iterator[httpx.Client]:
    """An HTTP client on the suite's gateway (the URL it says it listens on) sending `token`."""
    url = rpc_call_sync(dirs.socket("gateway"), "get_url")["url"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


def token_unless_the_case_breaks_it(case, token: str) -> dict | None:
    """The real token in place of the one schemathesis generated from the bearer scheme, except in
    a case whose headers are the invalid part (the Authorization header dropped or malformed):
    adding the token there would send a valid request, and the 200 would be read as invalid
    data accepted (ST201; the one schemathesis failure seen before, reproduced with
    `/api/equity?days=1` whose other invalid part, an empty-list query parameter, is not sent)."""
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return None if header is not None and header.mode.is_negative else {"Authorization": f"Bearer {token}"}
