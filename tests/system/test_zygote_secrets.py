"""The zygote never holds a secret (issue 19, item 4): the launcher (services/management/launcher.py)
sends each spawn request with the service's secret variables named only, their values on a pipe
of their own whose read end travels with the request (SCM_RIGHTS), read by the forked child alone.

A real zygote, driven by the launcher as the supervisor drives it, forks small entry files that
write the environment they were given. The requests are sent all at once (pipelined on the
socket), with and without secrets mixed, so each child must get the descriptor of its own request;
then the zygote's whole memory holds none of the values. test_secrets_canary.py does the same
with the whole suite and its real secrets."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

import orjson
import pytest

from services.management.launcher import ZygoteLauncher
from tests.system.test_secrets_canary import process_memory

pytestmark = pytest.mark.slow

ENTRY = """\
import json, os
with open(os.environ["OUT"], "w") as out:
    json.dump(dict(os.environ), out)
"""


def given(i: int) -> dict[str, str]:
    """Child i's secrets: a MarketAux token, and a Redis URL with a password (every third has none)."""
    if i % 3 == 2:
        return {}
    return {
        "MARKETAUX_API_TOKEN": f"cnrytok{i}{secrets.token_hex(8)}",
        "TRADING_REDIS_URL": f"unix://:cnrypw{i}{secrets.token_hex(8)}@/tmp/nowhere/redis.sock",
    }


async def test_each_forked_child_reads_its_own_secrets_and_the_zygote_holds_none(tmp_path: Path):
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    launcher = ZygoteLauncher(tmp_path / "logs", logging.getLogger("test-zygote-secrets"))
    plain = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    children = {i: given(i) for i in range(9)}
    try:
        await launcher.start()

        async def spawn(i: int):
            env = {**plain, "OUT": str(tmp_path / f"{i}.json"), **children[i]}
            return await launcher.spawn(f"child{i}", entry, env, tmp_path / f"{i}.log")

        forked = await asyncio.gather(*(spawn(i) for i in children))
        assert all(child is not None for child in forked)
        codes = await asyncio.wait_for(asyncio.gather(*(child.wait() for child in forked if child)), 60)
        assert codes == [0] * len(children), [(tmp_path / f"{i}.log").read_text() for i in children]
        for i, secret in children.items():
            seen = orjson.loads((tmp_path / f"{i}.json").read_bytes())
            assert {k: seen.get(k) for k in ("MARKETAUX_API_TOKEN", "TRADING_REDIS_URL")} == {
                "MARKETAUX_API_TOKEN": secret.get("MARKETAUX_API_TOKEN"),
                "TRADING_REDIS_URL": secret.get("TRADING_REDIS_URL"),
            }, i
        zygote = launcher.current
        assert zygote is not None and zygote.alive and launcher.started == 1
        values = [v.encode() for secret in children.values() for v in secret.values()]
        values += [
            v.split(b"@")[0].split(b":")[-1] for v in values if v.startswith(b"unix:")
        ]  # the passwords
        held = [v for data in process_memory(zygote.pid) for v in values if v in data]
        assert not held, held
        assert not [
            f
            for f in os.listdir(f"/proc/{zygote.pid}/fd")
            if "pipe" in os.readlink(f"/proc/{zygote.pid}/fd/{f}")
        ]
    finally:
        await launcher.close()
