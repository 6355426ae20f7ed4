"""Typed, frozen configuration loaded from YAML; unknown keys are rejected with a clear message."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tradebot.core.errors import UserInputError


class FrozenConfig(BaseModel):
    """Base for every config section: immutable, and an unknown key is an error, not a silent no-op."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


C = TypeVar("C", bound=FrozenConfig)


def _describe_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        # Suggest the closest valid key at the same level.
        model: Any = cls
        for part in first["loc"][:-1]:
            field = getattr(model, "model_fields", {}).get(part)
            model = getattr(field, "annotation", None) if field else None
        valid = sorted(getattr(model, "model_fields", {}).keys()) if model else []
        close = difflib.get_close_matches(str(first["loc"][-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
        return f"{source}: unknown config key '{loc}' ({hint})"
    return f"{source}: config key '{loc}': {first['msg']} (got {first.get('input')!r})"


def parse_config(cls: type[C], data: dict[str, Any] | None, source: str = "config") -> C:
    """Build ``cls`` from a mapping, turning validation errors into one-line ``UserInputError``s."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise UserInputError(_describe_validation_error(err, cls, source)) from None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed YAML of ``path``; a missing file or invalid YAML is one ``UserInputError`` line."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {what} not found (check the path)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserInputError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None


def load_config(cls: type[C], path: str | Path | None, section: str | None = None, *, required: bool = False) -> C:
    """Load ``cls`` from a YAML file (optionally one top-level section of it); defaults when no path.

    ``required``: the section must be there and set something (a file without it, e.g. with a typo in
    the section's name, is refused, not read as defaults)."""
    if path is None:
        return cls()
    path = Path(path)
    data = read_yaml(path)
    if section is not None:
        top = data if isinstance(data, dict) else {}
        if required and not top.get(section):
            keys = sorted(map(str, top))
            close = difflib.get_close_matches(section, keys, n=1)
            hint = (f"found '{close[0]}': did you mean '{section}'?" if close
                    else f"top-level keys: {', '.join(keys)}" if keys else "the file sets nothing")
            raise UserInputError(f"{path}: no '{section}:' section ({hint}); write the settings under '{section}:'")
        data = top.get(section, {}) if isinstance(data, dict) else data
        return parse_config(cls, data, f"{path} [{section}]")
    return parse_config(cls, data, str(path))
