"""Typed configuration built from untrusted data: one place that checks types and ranges.

Every config in nerfzip is a dataclass whose fields carry a docstring line (the help text) and,
where a value has limits, ``metadata=limits(...)``. ``from_dict`` builds such a dataclass from
a JSON / YAML / pipeline-text mapping and turns every violation into one ``NerfzipError`` line
naming the key and where it came from; ``check`` validates an instance built in Python. File
headers (field, render, scene space, occupancy), pass configs and training configs all go
through here, so a string where a number belongs, a NaN near plane or a list as a step size is
refused at load time instead of failing inside the renderer.

Supported annotations: ``bool``, ``int``, ``float`` (finite; ints accepted), ``str``,
``X | None``, ``tuple[X, ...]`` / ``list[X]`` (from JSON lists), ``dict[str, X]``, ``Any``
and nested dataclasses.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from nerfzip.errors import NerfzipError

MAX_ITEMS = 4096
"""Longest list a config value may hold (headers are small; a huge list is an attack)."""


def limits(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           choices: tuple[Any, ...] | None = None, length: int | None = None,
           items: tuple[float | None, float | None] | None = None) -> dict[str, Any]:
    """Field metadata: ``lo <= value <= hi`` (``lo < value`` when ``lo_open``), one of
    ``choices``, a sequence of exactly ``length`` items, each item within ``items``."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "length": length,
            "items": items}


def short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


@cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (read with ``ast``, as tyro
    does), inherited fields included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and \
                    isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        return f"a list of {type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "an object"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """``value`` as type ``hint`` (lists become tuples where the hint says tuple), or a
    ``NerfzipError`` naming ``key``."""

    def bad() -> NerfzipError:
        return NerfzipError(f"{where}: {key} must be {type_name(hint)}, got {short(value)}")

    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, where)
            except NerfzipError:
                pass
        raise bad()
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float (JSON allows 10**400)
            raise bad() from None
        if not math.isfinite(value):
            raise bad()
        return value
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
            raise bad()
        args = typing.get_args(hint)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis or origin is list:
            items = [coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise bad()
            items = [coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value,
                                                                                       args))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict) or len(value) > MAX_ITEMS:
            raise bad()
        _, vt = typing.get_args(hint) or (str, Any)
        return {str(k): coerce(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{where}: {key}")
    if isinstance(hint, type):
        if not isinstance(value, hint):
            raise bad()
        return value
    raise TypeError(f"schema: unsupported annotation {hint!r} of {key}")


def check_limits(value: Any, meta: Mapping[str, Any], key: str, where: str) -> None:
    if not meta or value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise NerfzipError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, "
                           f"got {short(value)}")
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise NerfzipError(f"{where}: {key} must have {length} items, got {short(value)}")
    values = value if isinstance(value, (tuple, list)) else [value]
    lo, hi = meta.get("items") or (meta.get("lo"), meta.get("hi"))
    if lo is None and hi is None:
        return
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        low = lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
        if low or (hi is not None and v > hi):
            span = (f"{'>' if meta.get('lo_open') else '>='} {lo}" if hi is None else
                    f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
            raise NerfzipError(f"{where}: {key} must be {span}, got {short(value)}")


def from_dict(cls: type, data: Any, where: str, *, strict: bool = False) -> Any:
    """Build dataclass ``cls`` from ``data`` with every value type- and range-checked.

    Unknown keys are ignored (files from older or newer writers) unless ``strict`` (user input:
    a pipeline step's arguments); a missing key takes the field's default or is an error."""
    if not isinstance(data, Mapping):
        raise NerfzipError(f"{where}: expected an object of {cls.__name__} settings, got "
                           f"{short(data)}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if strict:
        unknown = sorted(set(map(str, data)) - set(known))
        if unknown:
            raise NerfzipError(f"{where}: unknown setting {unknown[0]!r} (known: "
                               f"{', '.join(known)})")
    kwargs = {}
    th = hints(cls)
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise NerfzipError(f"{where}: {name} is missing")
            continue
        value = coerce(data[name], th[name], name, where)
        check_limits(value, f.metadata, name, where)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except NerfzipError as e:
        raise NerfzipError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise NerfzipError(f"{where}: {e}") from None


def check(obj: Any, where: str) -> None:
    """Validate a dataclass instance built in Python (call it from ``__post_init__``)."""
    th = hints(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(getattr(obj, f.name), th[f.name], f.name, where)
        check_limits(value, f.metadata, f.name, where)
        if value is not getattr(obj, f.name) and not dataclasses.is_dataclass(value):
            object.__setattr__(obj, f.name, value)


def describe(cls: type) -> list[dict[str, Any]]:
    """Each field's name, type, default and help line (for ``--list-passes`` and the docs)."""
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else None)
        out.append({"name": f.name, "type": type_name(hints(cls)[f.name]),
                    "default": default, "help": docs.get(f.name, ""),
                    "required": f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING})
    return out
