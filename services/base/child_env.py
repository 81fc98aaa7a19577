"""The environment a child process starts with: only the secrets it needs.

One rule, used wherever the suite starts a process: the supervisor for each service and for its
redis-server, ml-model for its model converter and for train_models.py. Which secret goes to which
service is the `secrets` column of the services table (services/registry.py); a process that is
not a service (Redis, the converter, the trainer) gets none.

- Every variable of SECRET_KEYS is removed, then the process's own ones put back (from the
  environment or the secrets file, already read by the caller). The process finds them in its
  environment, readable by its own user only (`/proc/<pid>/environ` is mode 0400).
- TRADING_SECRETS_FILE is never passed on: the file holds every secret.
- TRADING_REDIS_URL stays for the services (they all run the event bus, so they need its
  password); a process that does not use Redis loses it when it carries a credential.
- What counts as a secret in an environment (secret_variables): the variables of SECRET_KEYS and
  any whose value is a URL carrying a credential (TRADING_REDIS_URL with a password). The zygote
  launcher sends those apart from the rest, on a pipe only the forked service reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.base.config import SECRET_KEYS, secrets_from
from services.base.redaction import url_secrets
from services.registry import SERVICES

#: Children that are not services. They get no secret at all.
REDIS_SERVER = "redis-server"
MODEL_CONVERTER = "model-converter"
TRAIN_MODELS = "train-models"
ZYGOTE = "zygote"  # forks the services; their secrets go on a pipe of their own (launcher.py)
#: Every service runs the event bus (BaseService), so every service needs the Redis URL.
REDIS_USERS = frozenset(SERVICES)

if _unknown := sorted({s for service in SERVICES.values() for s in service.secrets} - set(SECRET_KEYS)):
    raise ValueError(f"registry: secrets not in SECRET_KEYS: {', '.join(_unknown)}")


def secrets_for(process: str) -> tuple[str, ...]:
    """The secret variables `process` is given (none for anything that is not a service)."""
    service = SERVICES.get(process)
    return service.secrets if service is not None else ()


def child_environment(
    process: str, environ: Mapping[str, str], secrets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`environ` as `process` may see it. `secrets` are the known values (Settings.secrets);
    None reads them from `environ` and its TRADING_SECRETS_FILE."""
    needed = secrets_for(process)
    # The file is read only for a process that needs a secret (the others need no readable file).
    known = secrets if secrets is not None else secrets_from(environ) if needed else {}
    env = {k: v for k, v in environ.items() if k not in SECRET_KEYS and k != "TRADING_SECRETS_FILE"}
    if process not in REDIS_USERS and url_secrets(env.get("TRADING_REDIS_URL", "")):
        del env["TRADING_REDIS_URL"]
    for name in needed:
        if known.get(name):
            env[name] = known[name]
    return env


def secret_variables(env: Mapping[str, str]) -> set[str]:
    """The names in `env` whose values are secrets: those of SECRET_KEYS (and TRADING_SECRETS_FILE,
    which names a file of them), and any variable holding a URL with a credential in it (the
    Redis password in TRADING_REDIS_URL, a token in a query)."""
    return {
        name
        for name, value in env.items()
        if name in SECRET_KEYS or name == "TRADING_SECRETS_FILE" or url_secrets(value)
    }
