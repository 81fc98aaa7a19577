"""Structured JSON logs: one JSON object per line to `<log dir>/<service>.log` and to stderr.

Files rotate at midnight and seven are kept. Known secret values are masked in every record, so a
credential that slips into a message or an exception still never reaches a log line.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, value)  # extras never overwrite ts/level/service/logger/msg
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else None
        if any(s in message or (exc_text and s in exc_text) for s in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
            if exc_text is not None:
                for secret in self.secrets:
                    exc_text = exc_text.replace(secret, "***")
                record.exc_info, record.exc_text = None, None
                record.error = exc_text
        return True


def setup_logging(
    service: str,
    log_dir: Path,
    *,
    secrets: Iterable[str] = (),
    stderr_level: int = logging.INFO,
    level: int = logging.INFO,
) -> Path:
    """Configure the root logger for one service process; returns the log file path."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{service}.log"
    formatter = JsonFormatter(service)
    redact = RedactSecrets(secrets)
    file_handler = logging.handlers.TimedRotatingFileHandler(
        path, when="midnight", backupCount=7, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    file_handler.addFilter(redact)
    stream_handler = logging.StreamHandler(sys.stderr)
    stream_handler.setFormatter(formatter)
    stream_handler.setLevel(stderr_level)
    stream_handler.addFilter(redact)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(file_handler)
    root.addHandler(stream_handler)
    root.setLevel(level)
    for noisy in ("asyncio", "httpx", "httpcore", "urllib3", "yfinance", "peewee"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
