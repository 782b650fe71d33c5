"""Typed experiment configs: dataclasses, ``key=value`` overrides checked against the field types, YAML files.

A config is a flat dataclass (flat so that ``--set lr=3e-4`` needs no dotted paths). Values given on the command
line are parsed as YAML scalars and then checked against the field's annotation; a wrong key or type is a
:class:`~kdgm.errors.UserError` that names the field and what it expects.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kdgm.errors import UserError

C = TypeVar("C")


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["lr=1e-3", "k=5"]`` → ``{"lr": "1e-3", "k": "5"}``."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check (and lightly convert) ``value`` against the type ``annotation`` of field ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except UserError as err:
                errors.append(str(err))
        raise UserError(f"{key}: expected {_name(annotation)}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list like [1, 3], got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, key) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UserError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # no config value means "NaN" or "infinity"; both break training silently
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key}: expected a string, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
    raise TypeError(f"config field {key} has an unsupported type {annotation!r}")


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply(config: C, values: dict[str, Any], *, parse_strings: bool = False) -> C:
    """A copy of ``config`` with ``values`` set, each checked against its field's type.

    Args:
        parse_strings: parse string values as YAML scalars first (for command-line ``--set``).
    """
    types_ = field_types(type(config))
    changes = {}
    for key, raw in values.items():
        if key not in types_:
            close = difflib.get_close_matches(key, types_, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(types_)}"
            raise UserError(f"unknown config key {key!r} for {type(config).__name__}{hint}")
        value = raw
        if parse_strings and isinstance(raw, str):
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
        changes[key] = _coerce(value, types_[key], key)
    updated = dataclasses.replace(config, **changes)
    validate = getattr(updated, "validate", None)
    if validate is not None:
        validate()
    return updated


def plain(value: Any) -> Any:
    """``value`` as YAML reads it back: tuples become lists, at any depth (inside lists and dicts too), so that a
    record compared with its own saved copy is equal."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML-safe values (tuples become lists)."""
    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a dict such as :func:`to_dict` wrote, with the same type checks as overrides."""
    return apply(cls(), values)


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a YAML mapping")
    return data
