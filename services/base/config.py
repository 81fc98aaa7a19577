"""One validated settings object, read from the environment once at start.

Every variable of the contract is parsed and checked here, so a typo in the environment stops a
service at start with one clear line instead of surfacing later as a strange failure. A service's
own tuning knobs (`TRADING_<SERVICE>_<KNOB>`) are a frozen dataclass read by
`services.base.knobs.read_knobs`, with the same parsers and the same `ConfigError`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from services.base.knobs import ConfigError, parse_bool, parse_float, parse_int
from services.base.redaction import mask_url, url_secrets
from services.base.socket_dir import default_socket_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

MARKET_DATA_SOURCES = ("auto", "yfinance", "csv", "synthetic")
DEFAULT_SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
SECRET_KEYS = (
    "MARKETAUX_API_TOKEN",
    "IG_API_KEY",
    "IG_USERNAME",
    "IG_PASSWORD",
    "IG_ACCOUNT_ID",
    # the alert channels' credentials (services/clients/alert_channels/config.py SECRET_VARIABLES)
    "TRADING_ALERTS_WEBHOOK_SECRET",
    "TRADING_ALERTS_SLACK_WEBHOOK_URL",
    "TRADING_ALERTS_NTFY_TOKEN",
    "TRADING_ALERTS_TELEGRAM_BOT_TOKEN",
    "TRADING_ALERTS_SMTP_PASSWORD",
    # the HTTP gateway's bearer token (services/gateway)
    "TRADING_GATEWAY_TOKEN",
)
IG_BASE_URLS = {
    "DEMO": "https://demo-api.ig.com/gateway/deal",
    "LIVE": "https://api.ig.com/gateway/deal",
}


def _default_log_dir() -> Path:
    system = Path("/var/log/trading")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return REPO_ROOT / "logs"


def read_secrets_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; refuses a file that group or others can read (it holds credentials)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"TRADING_SECRETS_FILE: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"TRADING_SECRETS_FILE: {path} is readable by group or others; run: chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"TRADING_SECRETS_FILE: line {number} is not KEY=VALUE")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def secrets_from(env: Mapping[str, str]) -> dict[str, str]:
    """The secrets of SECRET_KEYS set in `env`, else in TRADING_SECRETS_FILE (the environment wins)."""
    secrets = {key: env[key] for key in SECRET_KEYS if env.get(key)}
    if env.get("TRADING_SECRETS_FILE"):
        from_file = read_secrets_file(Path(env["TRADING_SECRETS_FILE"]))
        secrets = {**{k: v for k, v in from_file.items() if v}, **secrets}
    return secrets


def parse_instant(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an ISO-8601 instant") from None
    if value.tzinfo is None:
        raise ConfigError(f"{name}: {text!r} needs a UTC offset, e.g. 2025-03-03T09:00:00+11:00")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    socket_dir: Path
    log_dir: Path
    data_dir: Path
    models_dir: Path
    redis_url: str = field(repr=False)  # may hold the Redis password: shown as redis_url_shown
    redis_managed: bool
    symbols: tuple[str, ...]
    market_index: str
    market_data_source: str
    market_data_dir: Path
    clock_start: datetime | None
    clock_speed: float
    clock_epoch: float | None
    rpc_max_frame_bytes: int
    #: A service's JSON log rotates at midnight or when it passes this size, 7 kept.
    log_max_bytes: int
    marketaux_base_url: str
    ig_acc_type: str
    ig_base_url: str
    secrets: Mapping[str, str] = field(repr=False)
    environ: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        secrets = secrets_from(env)

        socket_dir = default_socket_dir(env)
        if not socket_dir.is_absolute():  # the CLI and the services run from different folders
            raise ConfigError(f"TRADING_SOCKET_DIR: {str(socket_dir)!r} must be an absolute path")
        data_dir = Path(env.get("TRADING_DATA_DIR", str(REPO_ROOT / "data")))
        redis_url = env.get("TRADING_REDIS_URL", "").strip()
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"TRADING_REDIS_URL: {mask_url(redis_url)!r} must start with redis://, rediss:// or unix://"
            )
        symbols = tuple(
            s.strip().upper()
            for s in env.get("TRADING_SYMBOLS", ",".join(DEFAULT_SYMBOLS)).split(",")
            if s.strip()
        )
        if not symbols:
            raise ConfigError("TRADING_SYMBOLS: the universe is empty")
        source = env.get("TRADING_MARKET_DATA_SOURCE", "auto").strip().lower()
        if source not in MARKET_DATA_SOURCES:
            raise ConfigError(
                f"TRADING_MARKET_DATA_SOURCE: {source!r} is not one of {', '.join(MARKET_DATA_SOURCES)}"
            )
        clock_start = None
        if env.get("TRADING_CLOCK_START"):
            clock_start = parse_instant("TRADING_CLOCK_START", env["TRADING_CLOCK_START"])
        ig_acc_type = env.get("IG_ACC_TYPE", "DEMO").strip().upper()
        if ig_acc_type not in IG_BASE_URLS:
            raise ConfigError(f"IG_ACC_TYPE: {ig_acc_type!r} is not DEMO or LIVE")
        settings = cls(
            socket_dir=socket_dir,
            log_dir=Path(env["TRADING_LOG_DIR"]) if env.get("TRADING_LOG_DIR") else _default_log_dir(),
            data_dir=data_dir,
            models_dir=Path(env.get("TRADING_MODELS_DIR", str(REPO_ROOT / "models"))),
            redis_url=redis_url or f"unix://{socket_dir / 'redis.sock'}",
            redis_managed=not redis_url,
            symbols=symbols,
            market_index=env.get("TRADING_MARKET_INDEX", "^AXJO").strip() or "^AXJO",
            market_data_source=source,
            market_data_dir=Path(env.get("TRADING_MARKET_DATA_DIR", str(data_dir / "market"))),
            clock_start=clock_start,
            clock_speed=_float(env, "TRADING_CLOCK_SPEED", 1.0, low=0.001, high=1_000_000.0),
            clock_epoch=_float(env, "TRADING_CLOCK_EPOCH", None, low=0.0, high=1e11),
            rpc_max_frame_bytes=_int(env, "TRADING_RPC_MAX_FRAME_BYTES", 1 << 20, low=1024, high=1 << 30),
            log_max_bytes=_int(env, "TRADING_LOG_MAX_BYTES", 10 << 20, low=64 << 10, high=1 << 40),
            marketaux_base_url=env.get("MARKETAUX_BASE_URL", "https://api.marketaux.com").rstrip("/"),
            ig_acc_type=ig_acc_type,
            ig_base_url=env.get("IG_BASE_URL", IG_BASE_URLS[ig_acc_type]).rstrip("/"),
            secrets=secrets,
            environ=env,
        )
        return settings

    # Typed accessors for one variable, validated like the contract's. A service's knobs are not
    # read here but declared once in its knob dataclass (services.base.knobs).
    def env_float(
        self, name: str, default: float, low: float | None = None, high: float | None = None
    ) -> float:
        return _float(self.environ, name, default, low=low, high=high)

    def env_int(self, name: str, default: int, low: int | None = None, high: int | None = None) -> int:
        return _int(self.environ, name, default, low=low, high=high)

    def env_bool(self, name: str, default: bool) -> bool:
        raw = self.environ.get(name, "")
        return parse_bool(name, raw) if raw.strip() else default

    def env_str(self, name: str, default: str) -> str:
        return self.environ.get(name, default)

    def secret(self, name: str) -> str | None:
        """A credential, or None when not configured. Never log the value."""
        return self.secrets.get(name)

    def secret_values(self) -> list[str]:
        """Every value to keep out of logs and replies: the secrets, and the password that
        TRADING_REDIS_URL may carry (as written and percent-decoded)."""
        return [*self.secrets.values(), *url_secrets(self.redis_url)]

    @property
    def redis_url_shown(self) -> str:
        """TRADING_REDIS_URL as it may be shown or logged: its password masked."""
        return mask_url(self.redis_url)


def _float(env: Mapping[str, str], name: str, default, low=None, high=None):
    raw = env.get(name, "")
    return parse_float(name, raw, low, high) if raw.strip() else default


def _int(env: Mapping[str, str], name: str, default, low=None, high=None):
    raw = env.get(name, "")
    return parse_int(name, raw, low, high) if raw.strip() else default


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests that change the environment)."""
    global _settings
    _settings = None
