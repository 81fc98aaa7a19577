"""Structured JSON logs: one JSON object per line to `<log dir>/<service>.log` and to stderr.

Files rotate at midnight, and also whenever one would pass `TRADING_LOG_MAX_BYTES` (a service that
logs in a loop must not fill the disk): `<service>.log.1` is the newest of seven kept, so one
service's JSON logs take at most 8 x that size. Known secret values are masked in every record, so a
credential that slips into a message or an exception still never reaches a log line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import logging.handlers
import os
import sys
import time
import traceback
from collections.abc import Iterable
from datetime import date
from datetime import time as dt_time
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import orjson

from services.base.redaction import MASK, redact, secret_list

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, secrets: Iterable[str] = ()):
        super().__init__()
        self.service = service
        # The last pass over the finished line (RedactSecrets cleaned the record's parts): each
        # registered value also as JSON writes it, escapes and all.
        values = secret_list(secrets)
        self.secrets = secret_list([*values, *(orjson.dumps(v).decode()[1:-1] for v in values)])

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
        if record.exc_info or record.exc_text:  # exc_text: the traceback RedactSecrets cleaned
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        line = orjson.dumps(entry, default=str).decode()
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return line


class RedactSecrets(logging.Filter):
    """Masks the registered secret values and credentials in URLs everywhere in a record: the
    message, every extra field (nested ones too), the exception with its traceback and the stack.
    A field whose value is not plain JSON is logged as its redacted `str()`, as the formatter would.
    """

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = secret_list(secrets)

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if value is None or isinstance(value, bool | int | float | date | dt_time | UUID):
            return value  # holds no text: left for orjson, which writes these its own way
        if isinstance(value, Enum):
            return self.clean(value.value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.clean(dataclasses.asdict(value))
        if isinstance(value, dict):
            return {self.clean(str(k)): self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.clean(v) for v in value]
        return redact(str(value), self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self.clean(value))
        if record.exc_info or record.exc_text:
            # The traceback as text, cleaned: an exception's message (an httpx error quoting its
            # URL) and the reprs in it are text by now; the exception object is dropped.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            record.exc_info, record.exc_text = None, redact(text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def _print_redacted(
    secrets: tuple[str, ...], kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    text = "".join(traceback.format_exception(kind, exc, tb))
    sys.stderr.write(redact(text, secrets))


def setup_logging(
    service: str,
    log_dir: Path,
    *,
    secrets: Iterable[str] = (),
    stderr_level: int = logging.INFO,
    level: int = logging.INFO,
    max_bytes: int = 10 << 20,
    backups: int = 7,
) -> Path:
    """Configure the root logger for one service process; returns the log file path."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{service}.log"
    secrets = list(secrets)
    formatter = JsonFormatter(service, secrets)
    redact_filter = RedactSecrets(secrets)
    file_handler = DailyAndSizeRotatingHandler(path, max_bytes, backups)
    file_handler.setFormatter(formatter)
    file_handler.addFilter(redact_filter)
    stream_handler = logging.StreamHandler(sys.stderr)
    stream_handler.setFormatter(formatter)
    stream_handler.setLevel(stderr_level)
    stream_handler.addFilter(redact_filter)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(file_handler)
    root.addHandler(stream_handler)
    # An exception nothing caught is printed by Python itself to stderr (the service's
    # *.stdout.log under the supervisor), past the handlers: redacted here too.
    sys.excepthook = functools.partial(_print_redacted, redact_filter.secrets)
    root.setLevel(level)
    for noisy in ("asyncio", "httpx", "httpcore", "urllib3", "yfinance", "peewee"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


def next_midnight(after: float) -> float:
    """The first local midnight after the instant `after` (epoch seconds)."""
    t = time.localtime(after)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, 0, 0, 0, 0, 0, -1))


class DailyAndSizeRotatingHandler(logging.handlers.RotatingFileHandler):
    """Rotates at local midnight, or once the file has reached `max_bytes` (before the next
    record: a file passes the size by one record at most), keeping `backups` numbered files (`.1`
    the newest): about (backups + 1) x max_bytes on disk. Cheaper than RotatingFileHandler's own
    test, which stats the file and formats every record twice."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        # An existing file from an earlier day rolls over at the first record, as the timed one did.
        self.rollover_at = next_midnight(os.stat(path).st_mtime)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        if self.stream.tell() == 0:
            if time.time() >= self.rollover_at:  # nothing from yesterday to keep apart
                self.rollover_at = next_midnight(time.time())
            return False
        return self.stream.tell() >= self.maxBytes or time.time() >= self.rollover_at

    def doRollover(self) -> None:
        super().doRollover()
        self.rollover_at = next_midnight(time.time())
