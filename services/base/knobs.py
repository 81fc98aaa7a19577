"""A service's tuning knobs: one frozen dataclass, filled from the environment by one reader.

Each field states, in one place, everything about its knob: the type (the annotation), the
default, the bounds and a one-line doc. The variable's name is derived, never written:
`TRADING_<SERVICE>_<FIELD>` (service upper-cased, hyphens to underscores)::

    @dataclass(frozen=True, slots=True)
    class SchedulerKnobs:
        service: ClassVar[str] = "scheduler"

        backup_keep: int = knob(7, low=1, high=365, doc="backups kept per database")

    knobs = read_knobs(SchedulerKnobs, settings.environ)  # TRADING_SCHEDULER_BACKUP_KEEP

A service reads its dataclass once, at start. A bad value raises `ConfigError` with one line that
names the variable; the service turns it into `<service>: configuration error: ...` and exit 2.

Types: `bool` (true/false, yes/no, on/off, 1/0), `int`, `float`, `Decimal`, `str`, `tuple[str, ...]`
(comma-separated), `Mapping[str, str]` (`KEY=VALUE,...`), anything else through `parse=`, and a
nested dataclass: a group whose fields are read as `<FIELD>_<GROUP FIELD>` (prediction's
`signal` group is TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD, ...). A group's own `__post_init__`
checks still apply, and the reader names the variable that broke them. The metadata is plain
(`doc`, `low`, `high`, `bounds`), so a pure domain dataclass can be a group without importing
this module.

`describe(cls)` lists a dataclass's knobs (variable, type, default, bounds, doc) and
`all_knobs()` every knob of the suite: the README's knob tables are derived from them.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

K = TypeVar("K")

PREFIX = "TRADING_"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

#: Every knob dataclass of the suite, as `module:Class` (imported only by `all_knobs`).
SUITE_KNOBS = (
    "services.base.events:EventBusKnobs",
    "services.base.rpc.limits:RpcKnobs",
    "services.base.storage:StorageKnobs",
    "services.management.manager_knobs:SupervisorKnobs",
    "services.management.manager_knobs:DashboardKnobs",
    "services.market_data.market_data_knobs:MarketDataKnobs",
    "services.sentiment.sentiment_knobs:SentimentKnobs",
    "services.ml_model.ml_model_knobs:MlModelKnobs",
    "services.prediction.prediction_knobs:PredictionKnobs",
    "services.scheduler.scheduler_knobs:SchedulerKnobs",
    "services.paper_trading.paper_trading_knobs:PaperTradingKnobs",
    "services.alerts.alerts_knobs:AlertsKnobs",
    "services.gateway.gateway_knobs:GatewayKnobs",
)


class ConfigError(ValueError):
    """The environment holds a value the suite cannot run with: fix the variable named."""


def knob(
    default: Any,
    *,
    doc: str,
    low: float | None = None,
    high: float | None = None,
    parse: Callable[[str], Any] | None = None,
    env: str | None = None,
    family: str | None = None,
    strict: bool = False,
) -> Any:
    """A field of a knob dataclass.

    `default` is the value, or for a nested group its dataclass. `low`/`high` are inclusive
    bounds of a number. `parse` turns the raw text into the value (raise ValueError saying what
    is wrong). `env` names a variable older than the naming rule.
    `family="KEY"` collects every `<VARIABLE>_<KEY>` that is set into a mapping by KEY (e.g. one
    entry file per service). `strict` (a nested group) refuses a variable under the group's
    prefix that names none of its fields, so a typo does not pass silently.
    """
    metadata = dict(doc=doc, low=low, high=high, parse=parse, env=env, family=family, strict=strict)
    if isinstance(default, type) and dataclasses.is_dataclass(default):  # a group: its own defaults
        return dataclasses.field(default_factory=default, metadata=metadata)
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def prefix_of(cls: type) -> str:
    """`TRADING_<SERVICE>_` of a knob dataclass (its `service` class variable)."""
    service: str = cls.service  # type: ignore[attr-defined]  # the dataclass's ClassVar
    return f"{PREFIX}{service.upper().replace('-', '_')}_"


def read_knobs(cls: type[K], environ: Mapping[str, str]) -> K:
    """Fill the knob dataclass `cls` from `environ` (unset or blank: the default)."""
    return _read(cls, environ, prefix_of(cls))


# ---- one value --------------------------------------------------------------------------------


def parse_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"{name}: {text!r} is not a boolean (use true or false)")


def parse_int(name: str, raw: str, low: float | None = None, high: float | None = None) -> int:
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an integer") from None
    check_bounds(name, text, value, low, high)
    return value


def parse_float(name: str, raw: str, low: float | None = None, high: float | None = None) -> float:
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a number") from None
    check_bounds(name, text, value, low, high)
    return value


def check_bounds(name: str, text: str, value: float | Decimal, low: float | None, high: float | None) -> None:
    if value != value:  # NaN compares false with everything, so no bound would catch it
        raise ConfigError(f"{name}: {text!r} is not a number")
    too_low, too_high = low is not None and value < low, high is not None and value > high
    if too_low and high is None:
        raise ConfigError(f"{name}: {text} is below {low:g}")
    if too_high and low is None:
        raise ConfigError(f"{name}: {text} is above {high:g}")
    if too_low or too_high:
        raise ConfigError(f"{name}: {text} is outside {bounds_text(low, high)}")


def bounds_text(low: float | None, high: float | None) -> str:
    """`1..10`, `>= 1`, `<= 10`, or empty when unbounded."""
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    if low is not None:
        return f">= {low:g}"
    return "" if high is None else f"<= {high:g}"


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_mapping(raw: str) -> Mapping[str, str]:
    pairs: dict[str, str] = {}
    for item in _parse_list(raw):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return MappingProxyType(pairs)


def _parse(name: str, raw: str, kind: Any, meta: Mapping[str, Any]) -> Any:
    low, high = meta.get("low"), meta.get("high")
    parse = meta.get("parse")
    if parse is None:
        if kind is bool:
            return parse_bool(name, raw)
        if kind is int:
            return parse_int(name, raw, low, high)
        if kind is float:
            return parse_float(name, raw, low, high)
        if kind is Decimal:
            # Through float, as money knobs always were read: "0.1" -> Decimal("0.1").
            return Decimal(str(parse_float(name, raw, low, high)))
        if kind is str:
            return raw
        if typing.get_origin(kind) is tuple:
            parse = _parse_list
        elif typing.get_origin(kind) is Mapping:
            parse = _parse_mapping
        else:
            raise TypeError(f"{name}: a knob of type {kind!r} needs parse=")
    try:
        value = parse(raw)
    except ConfigError:
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        check_bounds(name, raw.strip(), value, low, high)
    if isinstance(value, dict):  # the dataclass is frozen: so is what it holds
        value = MappingProxyType(value)
    return value


# ---- a dataclass ------------------------------------------------------------------------------


def _fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f, hints[f.name]


def _is_group(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _env_name(f: dataclasses.Field, prefix: str) -> str:
    return f.metadata.get("env") or f"{prefix}{f.name.upper()}"


def _read(cls: type[K], environ: Mapping[str, str], prefix: str) -> K:
    values: dict[str, Any] = {}
    set_by: dict[str, str] = {}  # field -> the variable that set it
    for f, kind in _fields(cls):
        name = _env_name(f, prefix)
        if _is_group(kind):
            if f.metadata.get("strict"):
                _refuse_unknown(kind, environ, f"{name}_")
            values[f.name] = _read(kind, environ, f"{name}_")
        elif f.metadata.get("family"):
            start = f"{name}_"
            found = {k[len(start) :]: v for k, v in environ.items() if k.startswith(start) and v.strip()}
            if found:
                values[f.name] = MappingProxyType(found)
                set_by[f.name] = f"{start}*"
        else:
            raw = environ.get(name, "")
            if raw.strip():
                values[f.name] = _parse(name, raw, kind, f.metadata)
                set_by[f.name] = name
    return _build(cls, values, set_by)


def _build(cls: type[K], values: dict[str, Any], set_by: dict[str, str]) -> K:
    """The dataclass; when its own checks refuse the values, name the variable to blame."""
    try:
        return cls(**values)
    except ValueError as exc:
        problem = exc
    groups = {k: v for k, v in values.items() if k not in set_by}
    for field_name, variable in set_by.items():
        try:
            cls(**groups, **{field_name: values[field_name]})
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
    # Only the combination is wrong (e.g. every weight zero): name each variable involved.
    raise ConfigError(f"{', '.join(set_by.values()) or cls.__name__}: {problem}") from None


def _refuse_unknown(cls: type, environ: Mapping[str, str], prefix: str) -> None:
    known = {f.name.upper() for f, _ in _fields(cls)}
    for key in sorted(environ):
        if key.startswith(prefix) and key[len(prefix) :] not in known:
            raise ConfigError(f"{key}: no such knob (known: {', '.join(sorted(known))})")


# ---- listing ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KnobInfo:
    """One row of a knob table."""

    env: str
    type: str
    default: str
    bounds: str
    doc: str


def describe(cls: type, prefix: str | None = None) -> list[KnobInfo]:
    """Every knob of the dataclass `cls`, nested groups flattened, in declaration order."""
    prefix = prefix_of(cls) if prefix is None else prefix
    defaults = cls()
    rows: list[KnobInfo] = []
    for f, kind in _fields(cls):
        name = _env_name(f, prefix)
        if _is_group(kind):
            rows.extend(describe(kind, f"{name}_"))
            continue
        family = f.metadata.get("family")
        rows.append(
            KnobInfo(
                env=f"{name}_<{family}>" if family else name,
                type=_type_text(kind),
                default=_value_text(getattr(defaults, f.name)),
                bounds=f.metadata.get("bounds") or bounds_text(f.metadata.get("low"), f.metadata.get("high")),
                doc=f.metadata.get("doc", ""),
            )
        )
    return rows


def all_knobs() -> list[KnobInfo]:
    """Every knob of the suite (framework, supervisor, dashboard, each service)."""
    rows: list[KnobInfo] = []
    for path in SUITE_KNOBS:
        module, _, name = path.partition(":")
        rows.extend(describe(getattr(importlib.import_module(module), name)))
    return rows


def _type_text(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "list"
    if typing.get_origin(kind) is Mapping:
        return "mapping"
    return getattr(kind, "__name__", str(kind))


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
