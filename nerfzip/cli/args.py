"""Command-line options generated from config dataclasses.

Each dataclass field becomes ``--field-name`` with its type and default, and the help text is the
docstring written under the field (``utils.schema.field_docs``), so the
configs stay the single place where an option is described.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` that were given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
