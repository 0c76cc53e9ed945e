"""Command-line options generated from config dataclasses.

Each dataclass field becomes ``--field-name`` with its type and default, and the help text is the
docstring written under the field (``utils.schema.field_docs``), so the
configs stay the single place where an option is described.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from nerfzip.utils.schema import field_docs


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type,
                          skip: tuple[str, ...] = ()) -> None:
    """Add ``--name`` options for every field of ``cls`` (default None = keep the config's)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "") + f" (default: {f.default})"
        origin = typing.get_origin(hint)
        if hint is bool:
            group.add_argument(flag, type=parse_bool, default=None, metavar="BOOL", help=help_)
        elif origin is dict:
            group.add_argument(flag, type=parse_key_value, nargs="+", default=None,
                               metavar="KEY=VALUE", help=docs.get(f.name, "")
                               + " (values read as JSON where they parse)")
        elif origin is tuple:
            item = typing.get_args(hint)[0]
            group.add_argument(flag, type=item, nargs="+", default=None, help=help_)
        else:
            group.add_argument(flag, type=hint, default=None, help=help_)


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_key_value(text: str) -> tuple[str, Any]:
    """``key=value`` as a pair; the value read as JSON where it parses (numbers, true / false,
    lists), a string otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` that were given on the command line."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if typing.get_origin(hints[f.name]) is dict:
            out[f.name] = dict(value)
        else:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
