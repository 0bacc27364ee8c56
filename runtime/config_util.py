"""Strict conversion between frozen config dataclasses and plain JSON dicts."""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from runtime.errors import ConfigError

T = TypeVar("T")


class DictConfig:
    """Mixin for frozen config dataclasses: ``to_dict`` / strict ``from_dict`` (unknown keys raise)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (nested configs as dicts, tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
        """Build from :meth:`to_dict` output; unknown keys or wrong types raise ConfigError."""
        return config_from_dict(cls, data, where)


def check_choices(cfg: Any, choices: Mapping[str, tuple[str, ...]]) -> None:
    """Raise ConfigError naming the first field of ``cfg`` whose value is not among its choices."""
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"{type(cfg).__name__}.{name}: {value!r} not in {list(allowed)}")


def check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    """Raise ConfigError naming the first of ``names`` whose value is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{type(cfg).__name__}.{name}: must be positive, got {value}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return a JSON-ready dict of a (possibly nested) config dataclass; tuples become lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong scalar types.

    Missing keys take the dataclass defaults. Lists become tuples where the
    field is annotated as a tuple. ``where`` prefixes error messages (e.g. a file name).
    """
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r} (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{label}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise  # the class's own validation already names the config
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _coerce(hint: Any, value: Any, label: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_from_dict(hint, value, label)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label}: expected a list, got {value!r}")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}: expected an integer, got {value!r}")
        return value
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {value!r}")
    return value


# -- value checks for TOML tables (daemon config, sink sections): value -> problem text or None --
Check = Callable[[Any], str | None]


def is_bool(v: Any) -> str | None:
    """A TOML boolean."""
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def positive(v: Any) -> str | None:
    """A finite number > 0 (booleans are not numbers here)."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    return None if ok else f"expected a positive number, got {v!r}"


def choice(options: Sequence[Any]) -> Check:
    """One of ``options``."""
    return lambda v: None if v in options else f"{v!r} is not one of {', '.join(map(str, options))}"


def non_empty_str(v: Any) -> str | None:
    """A string with something besides whitespace."""
    return None if isinstance(v, str) and v.strip() else f"expected a non-empty string, got {v!r}"


def int_at_least(lo: int, hi: int | None = None) -> Check:
    """An integer >= ``lo`` (and <= ``hi`` when given); booleans are not integers here."""

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            top = f" and <= {hi}" if hi is not None else ""
            return f"expected an integer >= {lo}{top}, got {v!r}"
        return None

    return check


def resolve_path(base: Path, value: str) -> Path:
    """``value`` with ``~`` expanded, relative to ``base`` (the config file's folder) unless absolute."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def toml_module() -> Any:
    """The TOML parser: ``tomllib`` on Python 3.11+, ``tomli`` on 3.10 (the ``daemon`` extra installs it).

    Raises:
        ConfigError: Python 3.10 without tomli (one line saying what to install).
    """
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli  # type: ignore[import-not-found,unused-ignore]

            return tomli
        except ModuleNotFoundError:
            raise ConfigError("tomli is missing on Python 3.10; pip install 'edgebind[daemon]'") from None
