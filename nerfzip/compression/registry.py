"""The pass registry: every compression pass under a stable name, with its typed ``Config``.

A pass is one module of ``passes/`` that defines a ``Config`` dataclass (one docstring line per
field, ranges as ``utils.schema.limits`` metadata) and a function ``(model, config, context)
-> (Compressed, report)`` decorated with ``@register_pass("name", Config)``. Everything else
comes from here: pipeline text / YAML validation (positional arguments map onto the Config
fields in order), the Python API (``nerfzip.quantize(model, bits=8)``), ``nerfzip compress
--list-passes`` and the README table (``python -m nerfzip.compression.registry --markdown``).

Old argument names in stored pipelines (.nrz headers, benchmark records) keep loading: each
pass declares its ``renames`` (old name -> new name), applied to every argument read.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nerfzip.errors import NerfzipError
from nerfzip.utils.schema import describe, field_docs, from_dict

if TYPE_CHECKING:
    from nerfzip.compression.compressed import Compressed
    from nerfzip.data.scene import Scene
    from nerfzip.rendering.model import RadianceModel


@dataclass(frozen=True)
class PassContext:
    """What a pass may use besides its model and config."""

    scene: Scene | None = None
    """The scene's training views and cameras (importance, fine-tuning, distillation)."""
    quiet: bool = True
    """No progress bars."""


PassFn = Callable[["RadianceModel | Compressed", Any, PassContext],
                  "tuple[Compressed, dict[str, Any]]"]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass."""

    name: str
    config: type
    run: PassFn
    api: str
    """Its name in the Python API (``nerfzip.<api>``)."""
    renames: Mapping[str, str] = field(default_factory=dict)
    needs_scene: bool = False
    summary: str = ""

    def fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config) if f.init]

    def renamed(self, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``kwargs`` with old argument names mapped to the current ones."""
        out: dict[str, Any] = {}
        written: dict[str, str] = {}
        for key, value in kwargs.items():
            new = self.renames.get(str(key), str(key))
            if new in out:
                old = next(k for k in (key, written[new]) if k != new)
                raise NerfzipError(f"{where}: argument {new!r} given twice (once as {old!r})")
            out[new], written[new] = value, str(key)
        return out

    def make_config(self, args: list[Any] | tuple[Any, ...], kwargs: Mapping[str, Any],
                    where: str) -> Any:
        """The validated ``Config`` of positional ``args`` (in field order) and ``kwargs``;
        any problem is one ``NerfzipError`` line starting with ``where``."""
        names = self.fields()
        kwargs = self.renamed(kwargs, where)
        if len(args) > len(names):
            raise NerfzipError(f"{where}: takes at most {len(names)} positional arguments "
                               f"({', '.join(names)})")
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise NerfzipError(f"{where}: unknown argument {unknown[0]!r} (takes "
                               f"{', '.join(names)})")
        twice = sorted(set(names[:len(args)]) & set(kwargs))
        if twice:
            raise NerfzipError(f"{where}: argument {twice[0]!r} given twice")
        return from_dict(self.config, {**dict(zip(names, args)), **kwargs}, where, strict=True)


_PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, config: type, *, api: str | None = None,
                  renames: Mapping[str, str] | None = None, needs_scene: bool = False
                  ) -> Callable[[PassFn], PassFn]:
    """Decorator: register ``fn(model, config, context)`` as pass ``name`` with dataclass
    ``config``; ``api`` names its Python function (default: ``name``), ``renames`` maps old
    argument names, ``needs_scene`` makes pipelines without a scene fail before it runs."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"pass {name!r}: its config must be a dataclass")
    missing = [f for f in dataclasses.fields(config) if f.init and f.name not in
               field_docs(config)]
    if missing:
        raise TypeError(f"pass {name!r}: config field {missing[0].name!r} has no help line")

    def deco(fn: PassFn) -> PassFn:
        old = _PASSES.get(name)
        if old is not None and (old.run.__module__, old.run.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ValueError(f"pass name {name!r} is taken by {old.run.__module__}")
        summary = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
        _PASSES[name] = PassInfo(name, config, fn, api or name, dict(renames or {}),
                                 needs_scene, summary)
        return fn

    return deco


def passes() -> dict[str, PassInfo]:
    """Every registered pass by name (importing ``passes/`` registers the built-in ones)."""
    import nerfzip.compression.passes  # noqa: F401

    return dict(_PASSES)


def get_pass(name: str, where: str) -> PassInfo:
    known = passes()
    if name not in known:
        raise NerfzipError(f"{where}: unknown pass {name!r} (known: {', '.join(sorted(known))})")
    return known[name]


# --- the Python API ------------------------------------------------------------------------
def api_function(info: PassInfo) -> Callable[..., tuple[Compressed, dict[str, Any]]]:
    """``fn(model, *args, scene=None, quiet=True, **kwargs)``: pass ``info`` as a function,
    its arguments those of its Config (positional in field order)."""

    def run(model: RadianceModel | Compressed, *args: Any, scene: Scene | None = None,
            quiet: bool = True, **kwargs: Any) -> tuple[Compressed, dict[str, Any]]:
        return info.run(model, info.make_config(args, kwargs, info.name),
                        PassContext(scene, quiet))

    run.__name__ = run.__qualname__ = info.api
    run.__module__ = info.run.__module__
    run.__doc__ = f"{info.summary}\n\nArguments (``{info.name}`` in pipelines):\n\n" + "\n".join(
        f"- ``{d['name']}`` ({d['type']}, default {d['default']!r}): {d['help']}"
        for d in describe(info.config))
    params = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_ONLY)]
    params += [inspect.Parameter(d["name"], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=d["default"]) for d in describe(info.config)]
    params += [inspect.Parameter("scene", inspect.Parameter.KEYWORD_ONLY, default=None),
               inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=True)]
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return run


def api_functions() -> dict[str, Callable[..., tuple[Compressed, dict[str, Any]]]]:
    """Every pass as a Python function, by API name."""
    return {info.api: api_function(info) for info in passes().values()}


# --- listings ------------------------------------------------------------------------------
def default_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else repr(value) if isinstance(value, str) else str(value)


def list_text() -> str:
    """``nerfzip compress --list-passes``: each pass, its arguments, defaults and help."""
    lines = []
    for name, info in sorted(passes().items()):
        lines.append(f"{name}  (Python: nerfzip.{info.api})  {info.summary}")
        for d in describe(info.config):
            lines.append(f"    {d['name']:<14} {d['type']:<22} default {default_text(d['default'])}"
                         f"  {d['help']}")
        if info.renames:
            lines.append("    (older names: " + ", ".join(f"{k} -> {v}" for k, v in
                                                         info.renames.items()) + ")")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's table of passes and their arguments."""
    rows = ["| pass | argument | type | default | meaning |", "|---|---|---|---|---|"]
    for name, info in sorted(passes().items()):
        rows.append(f"| **`{name}`** (`nerfzip.{info.api}`) | | | | {info.summary} |")
        for d in describe(info.config):
            rows.append(f"| | `{d['name']}` | {d['type']} | `{default_text(d['default'])}` | "
                        f"{d['help'].replace('|', '/')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="List the registered compression passes.")
    ap.add_argument("--markdown", action="store_true", help="a markdown table (for the README)")
    args = ap.parse_args(argv)
    print(markdown_table() if args.markdown else list_text())


if __name__ == "__main__":
    # Run as a script this file is __main__, not the module the passes register in.
    from nerfzip.compression.registry import main as registered_main

    registered_main()
