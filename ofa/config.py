"""Strict YAML -> dataclass configs with dotted overrides (``--set optim.lr=0.05``).

Unknown keys, missing required keys and wrong types are errors naming the key path and what is allowed.
The resolved config is saved in every run directory and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "apply_overrides",
    "check_int",
    "config_from_dict",
    "config_to_dict",
    "load_yaml",
    "parse_override",
    "read_user_text",
    "yaml_error_line",
]

T = TypeVar("T")


def check_int(value: object, name: str, minimum: int) -> None:
    """``value`` must be an integer >= ``minimum``; the error names ``name`` (a config key or an argument)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def read_user_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a file the user named; missing, a folder or not UTF-8 is a one-line ``ValueError``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} file {path} is a folder; expected a file")
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{what} file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})"
        ) from None


def yaml_error_line(error: yaml.YAMLError) -> str:
    """A YAML parser error in one line: the problem and where it is."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML is a ``ValueError``."""
    path = Path(path)
    text = read_user_text(path, "config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path}: malformed YAML: {yaml_error_line(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind).replace("typing.", ""))


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not {_type_name(kind)}")
    if origin is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin in (tuple, list):
        (item_kind, *_rest) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(item, item_kind, f"{where}[{index}]") for index, item in enumerate(value))
    if dataclasses.is_dataclass(kind):
        return config_from_dict(kind, value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{where}: {value} is outside the 64-bit integer range")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {kind!r}")


def config_from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from plain data, strictly; nested dataclasses are read recursively."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        path = f"{where}.{name}" if where != "config" else name
        if name in data:
            values[name] = _coerce(data[name], hints[name], path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path}: missing required key")
    try:
        return cls(**values)
    except ValueError as error:
        message = str(error)
        if message.startswith((f"{where}.", f"{where}:")):  # the section already named itself
            raise ValueError(message) from None
        raise ValueError(f"{where}: {message}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain data of a config dataclass (tuples become lists), for YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return plain(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> ``(["optim", "lr"], 0.05)``; the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``KEY=VALUE`` overrides applied (checked later by the dataclass)."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return result
