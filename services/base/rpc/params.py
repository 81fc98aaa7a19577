"""Exposed methods and their params: `@rpc` marks a method; `MethodSpec` validates wire params
against its signature and annotations (ints widen to float, enums from their values, ...)."""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from services.base.rpc.codec import json_default
from services.base.rpc.errors import InvalidParams

# --------------------------------------------------------------------------------------------
# Marking methods: decorators set attributes and return the function unchanged (nameko style),
# so a service's methods stay plain callables in tests.


def rpc(func: Callable) -> Callable:
    """Expose an async method over JSON-RPC; params are validated from its signature."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@rpc method {func.__qualname__} must be async")
    vars(func)["__rpc__"] = True  # the function's own attribute (Callable types declare none)
    return func


# --------------------------------------------------------------------------------------------
# Param validation from signatures and annotations.

_MISSING = object()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        base = "object" if origin is dict else "array"
        return f"{base}[{args}]" if args else base
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        dict: "object",
        list: "array",
    }.get(tp, getattr(tp, "__name__", str(tp)))


# Plain JSON types checked by exact type first: the common case costs one dict lookup per param.
_EXACT_JSON = {str: str, int: int, bool: bool, dict: dict, list: list}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float). Raises ValueError."""
    if type(tp) is type and _EXACT_JSON.get(tp) is type(value):
        return value
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        if value is None and type(None) in arms:
            return None
        real = [arm for arm in arms if arm is not type(None)]
        if len(real) == 1:
            return coerce(value, real[0], where)  # keep the precise message of the only arm
        for arm in real:
            try:
                return coerce(value, arm, where)
            except ValueError:
                continue
        raise ValueError(f"expected {_type_name(tp)}, got {_json_type(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ValueError(f"expected one of {_type_name(tp)}, got {_short(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ValueError(f"expected null, got {_json_type(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ValueError(f"expected one of {allowed}, got {_short(value)}") from None
    elif origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, list):
            args = typing.get_args(tp)
            if args and args[0] is not Ellipsis:
                return [_item(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
            return value
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            args = typing.get_args(tp)
            if len(args) == 2:
                return {k: _item(v, args[1], f"{where}.{k}") for k, v in value.items()}
            return value
    else:
        return value  # an annotation we do not check (documented as such)
    raise ValueError(f"expected {_type_name(tp)}, got {_json_type(value)}")


def _item(value: Any, tp: Any, where: str) -> Any:
    """Coerce a container's element; the error names the element's position."""
    try:
        return coerce(value, tp, where)
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(slots=True)
class ParamSpec:
    name: str
    annotation: Any
    default: Any  # _MISSING when required


@dataclass(slots=True)
class MethodSpec:
    name: str
    func: Callable[..., Awaitable[Any]]
    params: list[ParamSpec]
    by_name: dict[str, ParamSpec]
    doc: str

    @classmethod
    def from_function(cls, name: str, func: Callable[..., Awaitable[Any]]) -> MethodSpec:
        hints = typing.get_type_hints(func)
        params: list[ParamSpec] = []
        for p in inspect.signature(func).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"@rpc {name}: *args/**kwargs are not allowed (params must be declared)")
            default = _MISSING if p.default is p.empty else p.default
            params.append(ParamSpec(p.name, hints.get(p.name, Any), default))
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        return cls(name, func, params, {p.name: p for p in params}, doc[0] if doc else "")

    def bind(self, params: Any) -> dict[str, Any]:
        """Validate wire params (array or object) into keyword arguments. Raises InvalidParams."""
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(self.params):
                raise InvalidParams(
                    "params", f"takes at most {len(self.params)} positional parameters, got {len(params)}"
                )
            named = {self.params[i].name: v for i, v in enumerate(params)}
        else:
            for key in params:
                if key not in self.by_name:
                    raise InvalidParams(str(key), "unknown parameter")
            named = params
        kwargs: dict[str, Any] = {}
        for spec in self.params:
            value = named.get(spec.name, _MISSING)
            if value is _MISSING:
                if spec.default is _MISSING:
                    raise InvalidParams(spec.name, "missing required parameter")
                continue
            try:
                kwargs[spec.name] = coerce(value, spec.annotation, spec.name)
            except ValueError as exc:
                raise InvalidParams(spec.name, str(exc)) from None
        return kwargs

    def describe(self) -> dict:
        return {
            "name": self.name,
            "params": [
                {
                    "name": p.name,
                    "type": _type_name(p.annotation) if p.annotation is not Any else "any",
                    "required": p.default is _MISSING,
                    **({} if p.default is _MISSING else {"default": _jsonable(p.default)}),
                }
                for p in self.params
            ],
            "doc": self.doc,
        }


def _jsonable(value: Any) -> Any:
    try:
        orjson.dumps(value, default=json_default)
        return value
    except TypeError:
        return repr(value)
