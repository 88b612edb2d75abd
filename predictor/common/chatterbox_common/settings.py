"""One declaration per setting; the flag, the environment variable and the help text all come from it.

A program declares its settings as a subclass of `Settings` (a frozen pydantic model), one field per
setting: its type (a `Literal` lists the allowed values), its default, its range (`gt=0`) and its
`description`. From that one declaration

- `add_arguments` adds the flag `--field_name` to an argparse parser, with the help text
  "<description> Environment: <PREFIX><FIELD_NAME>.";
- `load_settings` takes the flag, else the environment variable, else the default, and lets pydantic
  turn the strings into the field types (lax mode) and check the ranges.

A small helper rather than pydantic-settings: the predictor's flags must live on KServe's own argparse
parser (`ArgumentParser(parents=[kserve.model_server.parser])`) in KServe's `--snake_case` style, and
every help text must name its variable; doing that through pydantic-settings' CLI source would take
more configuration than this module has lines, and one more pinned dependency in both images.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """Base of a program's settings: immutable once loaded (every part of the program sees the same
    values), and a misspelt keyword argument is an error rather than a silently ignored setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Refuses a setting without a description: it is the flag's help text and the field's doc."""
        super().__pydantic_init_subclass__(**kwargs)
        missing = [name for name, field in cls.model_fields.items() if not field.description]
        if missing:
            raise TypeError(f"{cls.__name__}: settings without a description: {', '.join(missing)}")


def env_name(env_prefix: str, field_name: str) -> str:
    return env_prefix + field_name.upper()


def _optional(annotation: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the type without None) for `X | None` and `Optional[X]`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return True, args[0]
    return False, annotation


def _choices(annotation: Any) -> tuple[str, ...] | None:
    _, core = _optional(annotation)
    if typing.get_origin(core) is Literal:
        return tuple(str(choice) for choice in typing.get_args(core))
    return None


def add_arguments(parser: argparse.ArgumentParser, settings_cls: type[Settings], env_prefix: str,
                  group_title: str) -> None:
    """Adds one `--field_name` flag per field, in a group of its own.

    Every flag defaults to None, so that an absent flag leaves the environment variable or the
    field's default in force (argparse cannot tell "not given" from "given the default" otherwise).
    """
    group = parser.add_argument_group(group_title)
    for name, field in settings_cls.model_fields.items():
        _, core = _optional(field.annotation)
        extra = {"metavar": "{true,false}"} if core is bool else {}
        group.add_argument(f"--{name}", default=None, choices=_choices(field.annotation),
                           help=f"{field.description} Environment: {env_name(env_prefix, name)}.", **extra)


def _prepare(raw: Any, annotation: Any) -> Any:
    """A flag's or a variable's string in the shape pydantic's lax mode takes for the field's type.

    Booleans take the spellings people write in manifests; an empty string means None where None is
    allowed (a Helm value left empty); `tuple[str, ...]` is comma-separated, blanks dropped.
    """
    if not isinstance(raw, str):
        return raw  # already typed (a caller's own Namespace)
    allows_none, core = _optional(annotation)
    if allows_none and raw == "":
        return None
    if core is bool:
        value = raw.strip().lower()
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        raise ValueError(f"{raw!r} is not a boolean: use one of {', '.join(_TRUE + _FALSE)}")
    if typing.get_origin(core) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(settings_cls: type[S], env_prefix: str, args: argparse.Namespace | None = None,
                  environ: Mapping[str, str] | None = None) -> S:
    """The settings from the flags in `args`, else `environ` (default: os.environ), else the defaults.

    Raises ValueError naming the variable (and the flag, when the value came from one) of the first
    value that does not fit its field.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, tuple[str, Any]] = {}  # field -> (where its value came from, the raw value)
    for name, field in settings_cls.model_fields.items():
        env = env_name(env_prefix, name)
        raw = getattr(args, name, None) if args is not None else None
        where = f"--{name} ({env})"
        if raw is None:
            raw, where = environ.get(env), env
        if raw is None:
            continue
        try:
            values[name] = _prepare(raw, field.annotation)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        origin[name] = (where, raw)
    try:
        return settings_cls(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = error["loc"][0] if error["loc"] else None
        if name not in origin:  # a default or a check across fields: no one value to blame
            raise ValueError(f"{settings_cls.__name__}: {error['msg']}") from None
        where, raw = origin[name]
        raise ValueError(f"{where}: {error['msg']}, got {raw!r}") from None
