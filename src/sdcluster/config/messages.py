"""pydantic's validation errors, told the way a user reads them: ``FILE: path: message`` + a hint.

One problem gives one line and its own hint; several give a header and one line each, with each
line's own fix (a single joined hint would not say which fix goes with which line).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from sdcluster.errors import ConfigError

from .model import SECTIONS, Config
from .rules import Invalid, Problems, quote

INIT_HINT = "create one: sdcluster init --project P --user EMAIL"


def validate(data: Mapping[str, Any], *, source: str | None, origins: Mapping[str, str]) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'configuration'}: expected a table of settings, got {toml_type(data)}")
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        problems = [line for error in e.errors() for line in _explain(error)]
        raise _config_error(problems, source, origins) from None


@dataclass
class _Line:
    path: tuple[str | int, ...]
    message: str
    hint: str = ""


def _explain(error: Mapping[str, Any]) -> list[_Line]:
    """One pydantic error -> the problem lines a user reads."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, Problems):
        return [_Line(loc + tuple(p.field.split(".")), p.message, p.hint) for p in cause.problems]
    if isinstance(cause, Invalid):
        return [
            _Line(loc + (tuple(cause.field.split(".")) if cause.field else ()), cause.message, cause.hint)
        ]
    if error["type"] == "extra_forbidden":
        return [_unknown_key(loc)]
    return [_Line(loc, _builtin_message(error), _builtin_hint(loc, error))]


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        if not (isinstance(part, str) and part in SECTIONS and model is Config):
            return None
        model = SECTIONS[part]
    return model


def _unknown_key(loc: tuple[str | int, ...]) -> _Line:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    fields = list(model.model_fields) if model else []
    where = f"in [{'.'.join(map(str, loc[:-1]))}]" if loc[:-1] else "at the top level"
    message = f"unknown key {quote(key)} {where}"
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return _Line(loc, f"{message}; did you mean {quote(close[0])}?", f"rename it to {close[0]}")
    # A field of another section written in the wrong place ("zone" at the top level).
    homes = [
        s for s, m in SECTIONS.items() if key in m.model_fields and s != (loc[0] if len(loc) > 1 else None)
    ]
    if homes:
        return _Line(loc, f"{message}; it belongs under [{homes[0]}]", f"move it under [{homes[0]}]")
    return _Line(loc, message, f"remove it; valid keys {where}: {', '.join(fields)}")


_TYPE_WORDS = {
    "int": "an integer",
    "bool": "true or false",
    "string": "a string",
    "dict": "a table",
    "model": "a table",
    "tuple": "an array",
    "list": "an array",
    "float": "a number",
}


def _builtin_message(error: Mapping[str, Any]) -> str:
    kind, ctx, value = str(error["type"]), error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "is required"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit} (got {quote(value)})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {quote(value)})"
    family = kind.split("_")[0]
    if family in _TYPE_WORDS and kind.endswith(("_type", "_parsing", "_instance_of")):
        return f"must be {_TYPE_WORDS[family]}, not {toml_type(value)} {_short(value)}".rstrip()
    msg = str(error.get("msg", kind))
    return msg[:1].lower() + msg[1:]


def _builtin_hint(loc: tuple[str | int, ...], error: Mapping[str, Any]) -> str:
    if error["type"] == "missing" and loc in (("project",), ("user",)):
        return INIT_HINT
    return ""


def toml_type(value: object) -> str:
    for typ, word in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string")):
        if isinstance(value, typ):
            return word
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def _short(value: object) -> str:
    if isinstance(value, Mapping | list | tuple):
        return ""
    text = quote(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _origin(path: tuple[str | int, ...], origins: Mapping[str, str]) -> str:
    """Where a value came from when not from the file: an environment variable or ``--set``."""
    keys = [str(p) for p in path if isinstance(p, str)]
    for n in range(len(keys), 0, -1):
        origin = origins.get(".".join(keys[:n]))
        if origin:
            return origin
    return ""


def _config_error(lines: list[_Line], source: str | None, origins: Mapping[str, str]) -> ConfigError:
    """One problem: ``FILE: path: message`` + its hint. Several: a header, then one line each with its
    own fix after ``; `` (a single joined hint would not say which fix goes with which line)."""
    where = f" in {source}" if source else ""
    texts, fallback = [], f"fix it{where}"
    for line in lines:
        origin = _origin(line.path, origins)
        texts.append(f"{_format_path(line.path)}{f' (from {origin})' if origin else ''}: {line.message}")
        fallback = (
            (f"fix the value given with {origin}" if origin.startswith("--") else f"fix {origin}")
            if origin
            else fallback
        )
    if len(texts) == 1:
        return ConfigError(f"{source or 'invalid configuration'}: {texts[0]}", hint=lines[0].hint or fallback)
    head = f"{source}: {len(texts)} problems" if source else f"invalid configuration ({len(texts)} problems)"
    texts = [f"{text}; {line.hint}" if line.hint else text for text, line in zip(texts, lines, strict=True)]
    return ConfigError("\n  ".join([head + ":", *texts]), hint=f"fix the {len(texts)} problems above")
