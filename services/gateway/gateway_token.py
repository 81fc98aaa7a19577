"""The gateway's bearer token: TRADING_GATEWAY_TOKEN (environment or secrets file), else the
token file `<TRADING_DATA_DIR>/gateway.token`, made owner-only with 32 random bytes when missing,
by set-up (`python -m services.gateway.gateway_token`, from `setup_microservices.py --init-db`) or
at the gateway's first start. Standard library only, so set-up runs it without the server's
dependencies.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from services.base import ConfigError, Settings, get_settings

TOKEN_FILE = "gateway.token"
MIN_TOKEN_CHARS = 16


def gateway_token(settings: Settings) -> str:
    """TRADING_GATEWAY_TOKEN (environment or secrets file), else `<data dir>/gateway.token`,
    made here (mode 0600, 32 random bytes) the first time. Set-up makes it too."""
    given = settings.secret("TRADING_GATEWAY_TOKEN")
    if given:
        if len(given) < MIN_TOKEN_CHARS:
            raise ConfigError("TRADING_GATEWAY_TOKEN must be at least 16 characters")
        return given
    return ensure_token_file(settings.data_dir / TOKEN_FILE)


def ensure_token_file(path: Path) -> str:
    """The token in `path`, created owner-only if missing; refuses a file others can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by group or others; run: chmod 600 {path}")
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{path} holds no token of at least 16 characters; delete it to make a new one")
    return token


def main() -> int:
    settings = get_settings()
    if settings.secret("TRADING_GATEWAY_TOKEN"):
        print("[setup] gateway token: TRADING_GATEWAY_TOKEN is set", flush=True)
        return 0
    try:
        ensure_token_file(settings.data_dir / TOKEN_FILE)
    except (ConfigError, OSError) as exc:
        print(f"[setup] gateway token: {exc}", file=sys.stderr)
        return 1
    print(f"[setup] gateway token ready: {settings.data_dir / TOKEN_FILE} (mode 0600)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
