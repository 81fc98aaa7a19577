"""Secrets never leak: URL masking, log redaction of every part of a record, and which secrets
each child process is given (services.base.redaction, services.base.logs, services.base.child_env)."""

from __future__ import annotations

import io
import logging
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from services.base.child_env import (
    MODEL_CONVERTER,
    REDIS_SERVER,
    TRAIN_MODELS,
    child_environment,
    secret_variables,
    secrets_for,
)
from services.base.config import SECRET_KEYS, Settings
from services.base.logs import JsonFormatter, RedactSecrets
from services.base.redaction import mask_identifier, mask_url, redact, url_secrets
from services.registry import SERVICES
from tests.support import REPO


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cretpw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:s3cretpw@host", "rediss://user:***@host"),
        ("unix://:s3cretpw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("unix:///run/redis.sock?db=0&password=s3cretpw", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://tokenonly@host", "redis://***@host"),  # a bare userinfo may be the password
        ("redis://host:6379/0", "redis://host:6379/0"),  # nothing to hide: unchanged
        ("unix:///tmp/sock/redis.sock", "unix:///tmp/sock/redis.sock"),
        (
            "https://api.marketaux.com/v1/news/all?symbols=CBA.AX&api_token=mx123456&limit=3",
            "https://api.marketaux.com/v1/news/all?symbols=CBA.AX&api_token=***&limit=3",
        ),
        ("http://127.0.0.1:8080/x?Token=abcd1234", "http://127.0.0.1:8080/x?Token=***"),
    ],
)
def test_mask_url(url, shown):
    assert mask_url(url) == shown
    assert mask_url(shown) == shown  # masking twice changes nothing


@pytest.mark.parametrize(("value", "shown"), [("ABC123", "***C123"), ("Z9", "***"), ("", ""), (None, None)])
def test_mask_identifier(value, shown):
    assert mask_identifier(value) == shown


def test_url_secrets_as_written_and_decoded():
    assert url_secrets("redis://u:p%40ss-word@host/0") == ["p%40ss-word", "p@ss-word"]
    assert url_secrets("unix:///s.sock?password=abcd1234") == ["abcd1234"]
    assert url_secrets("redis://host:6379") == [] and url_secrets("redis://:ab@h") == []  # too short


def test_redact_text_masks_registered_values_and_url_credentials():
    text = "failed: GET http://x/v1?api_token=zzzz9999 for redis://:pw-canary@h with IG pw-canary"
    assert (
        redact(text, ["pw-canary"]) == "failed: GET http://x/v1?api_token=*** for redis://:***@h with IG ***"
    )


def _logged(secrets, *args, exc: BaseException | None = None, **extra) -> dict:
    """One record through the filter and the formatter, as setup_logging wires them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("t", secrets))
    handler.addFilter(RedactSecrets(secrets))
    logger = logging.getLogger("test-secrets")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(*args, extra=extra)
        else:
            logger.warning(*args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return orjson.loads(stream.getvalue())


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(password=hunter2-canary)"

    __str__ = __repr__


def test_extra_fields_are_redacted_nested_and_opaque():
    line = _logged(
        ["hunter2-canary"],
        "connected to %s",
        "redis://:hunter2-canary@h",
        redis_url="redis://:hunter2-canary@h/0",
        nested={"creds": ["x", "IG says hunter2-canary"], "n": 3},
        obj=Opaque(),
    )
    assert "hunter2-canary" not in orjson.dumps(line).decode()
    assert line["redis_url"] == "redis://:***@h/0" and line["msg"] == "connected to redis://:***@h"
    assert line["nested"] == {"creds": ["x", "IG says ***"], "n": 3}
    assert line["obj"] == "Opaque(password=***)"


@dataclass
class Quote:
    symbol: str
    note: str


def test_extras_keep_their_json_shape():
    at = datetime(2024, 6, 18, 11, 0, tzinfo=UTC)
    line = _logged(["hunter2-canary"], "x", at=at, day=at.date(), quote=Quote("CBA.AX", "hunter2-canary"))
    assert line["at"] == "2024-06-18T11:00:00+00:00" and line["day"] == "2024-06-18"
    assert line["quote"] == {"symbol": "CBA.AX", "note": "***"}


def test_url_credentials_are_masked_even_unregistered():
    line = _logged([], "state", url="rediss://app:notregistered@h")
    assert line["url"] == "rediss://app:***@h"


def test_an_httpx_exception_quoting_its_url_is_redacted():
    request = httpx.Request("GET", "https://api.marketaux.com/v1/news/all?api_token=mx-canary-777")
    error = httpx.HTTPStatusError(
        "Client error '401' for url 'https://api.marketaux.com/v1/news/all?api_token=mx-canary-777'",
        request=request,
        response=httpx.Response(401, request=request),
    )
    line = _logged([], "fetch failed: %r", error, exc=error)
    assert "mx-canary-777" not in orjson.dumps(line).decode()
    assert "api_token=***" in line["exc"] and "HTTPStatusError" in line["exc"]


def test_a_registered_secret_with_json_escapes_is_masked_in_the_line():
    secret = 'quo"te\\canary'
    line = _logged([secret], "plain", field=secret)
    assert line["field"] == "***"


# ---- which secrets reach which child ----------------------------------------------------------

CANARIES = {key: f"canary-{key.lower()}" for key in SECRET_KEYS}
REDIS_URL = "unix://:canary-redis-pw@/tmp/x/redis.sock"


def test_every_registered_secret_is_a_secret_key():
    assert {s for service in SERVICES.values() for s in service.secrets} <= set(SECRET_KEYS)
    assert not set(SECRET_KEYS) - {s for service in SERVICES.values() for s in service.secrets}, (
        "a secret no service is given: drop it from SECRET_KEYS or give it to its service"
    )


@pytest.mark.parametrize(
    ("process", "secrets", "redis"),
    [
        ("sentiment", {"MARKETAUX_API_TOKEN"}, True),
        ("market-data", {"IG_API_KEY", "IG_USERNAME", "IG_PASSWORD", "IG_ACCOUNT_ID"}, True),
        ("paper-trading", {"IG_API_KEY", "IG_USERNAME", "IG_PASSWORD", "IG_ACCOUNT_ID"}, True),
        ("gateway", {"TRADING_GATEWAY_TOKEN"}, True),
        ("prediction", set(), True),
        ("scheduler", set(), True),
        ("ml-model", set(), True),
        ("alerts", {k for k in SECRET_KEYS if k.startswith("TRADING_ALERTS_")}, True),
        # Not services: no secret, no Redis password.
        (REDIS_SERVER, set(), False),
        (MODEL_CONVERTER, set(), False),
        (TRAIN_MODELS, set(), False),
    ],
)
def test_child_environment(process, secrets, redis):
    environ = {"PATH": "/usr/bin", "TRADING_REDIS_URL": REDIS_URL, "IG_ACC_TYPE": "DEMO", **CANARIES}
    env = child_environment(process, environ)
    assert {k for k in env if k in SECRET_KEYS} == secrets == set(secrets_for(process))
    assert all(env[k] == CANARIES[k] for k in secrets)
    assert ("TRADING_REDIS_URL" in env) is redis
    assert env["PATH"] == "/usr/bin" and env["IG_ACC_TYPE"] == "DEMO"  # not secrets: passed on


def test_secrets_from_the_file_reach_only_their_service(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("MARKETAUX_API_TOKEN=canary-from-file\nIG_PASSWORD=canary-ig-file\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    environ = {"TRADING_SECRETS_FILE": str(path), "PATH": "/usr/bin"}
    settings = Settings.from_env(environ)
    sentiment = child_environment("sentiment", environ, settings.secrets)
    assert sentiment == {"PATH": "/usr/bin", "MARKETAUX_API_TOKEN": "canary-from-file"}
    assert child_environment("prediction", environ) == {"PATH": "/usr/bin"}  # no file, no secret


def test_secret_variables_are_the_secret_keys_and_urls_with_credentials():
    """What the zygote launcher keeps out of a spawn request (their values go on a pipe)."""
    env = {
        "PATH": "/usr/bin",
        "MARKETAUX_API_TOKEN": "tok-canary",
        "TRADING_REDIS_URL": REDIS_URL,
        "TRADING_ALERTS_NTFY_URL": "https://ntfy.example/desk",  # no credential: not a secret
        "SOME_FEED_URL": "https://feed.example/v1?api_token=canary-in-a-query",
    }
    assert secret_variables(env) == {"MARKETAUX_API_TOKEN", "TRADING_REDIS_URL", "SOME_FEED_URL"}
    assert secret_variables({"TRADING_REDIS_URL": "unix:///tmp/x/redis.sock"}) == set()


def test_a_passwordless_redis_url_stays_for_everyone():
    environ = {"TRADING_REDIS_URL": "unix:///tmp/x/redis.sock"}
    assert child_environment(MODEL_CONVERTER, environ) == environ


def test_settings_register_and_mask_the_redis_password():
    settings = Settings.from_env({"TRADING_REDIS_URL": "redis://:canary-redis-pw@h:6379/0"})
    assert "canary-redis-pw" in settings.secret_values()
    assert settings.redis_url_shown == "redis://:***@h:6379/0"


def test_an_uncaught_exception_is_printed_redacted(tmp_path):
    # Python prints it to stderr past the log handlers: setup_logging's excepthook redacts it.
    code = (
        "from pathlib import Path; from services.base.logs import setup_logging;"
        f"setup_logging('t', Path({str(tmp_path)!r}), secrets=['canary-uncaught']);"
        "raise RuntimeError('boom canary-uncaught redis://:pw-unregistered@h')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1 and "RuntimeError: boom *** redis://:***@h" in done.stderr, done.stderr
    assert "canary-uncaught" not in done.stderr and "pw-unregistered" not in done.stderr


def test_a_process_without_secrets_never_reads_the_file(tmp_path):
    environ = {"TRADING_SECRETS_FILE": str(tmp_path / "missing.env"), "PATH": "/usr/bin"}
    assert child_environment(TRAIN_MODELS, environ) == {"PATH": "/usr/bin"}
