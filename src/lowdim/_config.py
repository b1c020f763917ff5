"""Command-line options read from configuration dataclasses (their defaults and help, never re-typed).

A configuration field declares its default and its ``metadata["help"]`` once; a command line adds it
with :func:`add_config_options` and builds the configuration back with :func:`config_kwargs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence

__all__ = ["add_config_options", "config_kwargs"]


def hint(text: str) -> dict[str, str]:
    """``field(metadata=hint("…"))``: the help a configuration field carries (read by
    :func:`add_config_options`)."""
    return {"help": text}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(hint) -> tuple[type, bool]:
    """``(element type, is_sequence)`` of a field's type hint (``X | None`` gives X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _value_type(args[0])
    if typing.get_origin(hint) in (tuple, list):
        return (args[0] if args else str), True
    return hint, False


def add_config_options(parser: argparse.ArgumentParser, cls, names: Sequence[str]) -> None:
    """Add ``--name`` options for the fields ``names`` of the dataclass ``cls``.

    Each option takes the field's default and its ``metadata["help"]`` (with the default appended);
    tuple fields take several values; a boolean field that defaults to False becomes a flag.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f = fields[name]
        kind, many = _value_type(hints[name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        if kind is bool and default is False:
            parser.add_argument(_option(name), action="store_true", help=help_text)
            continue
        shown = " ".join(map(str, default)) if many and default is not None else default
        parser.add_argument(
            _option(name), type=kind, nargs="+" if many else None,
            default=list(default) if many and default is not None else default,
            required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            help=help_text if default is None else f"{help_text} (default: {shown})",
        )


def config_kwargs(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The parsed values of the options :func:`add_config_options` added, by field name."""
    return {name: getattr(args, name) for name in names}
