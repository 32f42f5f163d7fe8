"""Where configuration comes from: the TOML file, ``SDCLUSTER_*`` environment variables, overrides.

See the package docstring for precedence and how environment values are typed.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from sdcluster.errors import ConfigError

from .messages import INIT_HINT, validate
from .model import SECTIONS, Config

DEFAULT_CONFIG_FILE = "sdcluster.toml"
ENV_PREFIX = "SDCLUSTER_"
ENV_CONFIG = "SDCLUSTER_CONFIG"
# Names in the SDCLUSTER_ namespace owned by other parts of sdcluster (the emulator protocol, the CLI).
NON_CONFIG_ENV = frozenset({"EMULATOR", "CONFIG"})
ENV_ALIASES = {"STATE": "state.path"}
# How a value given as an override (the CLI's --set and flags, a library caller's overrides=) is named.
OVERRIDES = "--set"

# --------------------------------------------------------------------------------------------------
# Loading: TOML, environment, overrides; translating pydantic errors into one ConfigError.


def read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{file}: invalid TOML: {e}", hint="fix the TOML syntax at the line and column shown"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read the config file: {e}", hint="check the path") from e


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``{"cluster": {"zone": z}, "cluster.name": n}`` -> ``("cluster.zone", z), ("cluster.name", n)``."""
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted in SECTIONS:
            yield from flatten(value, dotted + ".")
        elif value is not None:
            yield dotted, value


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def env_names() -> dict[str, str]:
    """Every configuration variable name (without prefix) -> its dotted field path."""
    names = {name.upper(): name for name in Config.model_fields if name not in SECTIONS}
    for section, model in SECTIONS.items():
        names.update({f"{section}__{name}".upper(): f"{section}.{name}" for name in model.model_fields})
    return names


def env_values(env: Mapping[str, str]) -> Iterable[tuple[str, Any, str]]:
    """``(dotted key, typed value, variable name)`` for each configuration variable that is set."""
    names = env_names()
    for var in sorted(env):
        name = var[len(ENV_PREFIX) :] if var.startswith(ENV_PREFIX) else None
        if not name or name in NON_CONFIG_ENV or not env[var]:
            continue
        dotted = ENV_ALIASES.get(name) or names.get(name)
        if dotted is None:
            _reject_unknown_env(var, name, names)
            continue
        yield dotted, _coerce_env(env[var], _annotation(dotted)), var


def _reject_unknown_env(var: str, name: str, names: Mapping[str, str]) -> None:
    # SDCLUSTER_<SECTION>__<FIELD> is unmistakably meant as configuration; other names may belong to
    # other tools, so they are errors only when they look like a misspelt field.
    close = difflib.get_close_matches(name, list(names) + list(ENV_ALIASES), n=1, cutoff=0.8)
    if "__" in name or close:
        suggestion = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        raise ConfigError(
            f"environment: {var} is not a configuration variable{suggestion}",
            hint=f"unset it or fix its name; fields are {ENV_PREFIX}<FIELD> and {ENV_PREFIX}<SECTION>__<FIELD>",
        )


def _annotation(dotted: str) -> Any:
    section, _, name = dotted.rpartition(".")
    model: type[BaseModel] = SECTIONS[section] if section else Config
    return model.model_fields[name].annotation


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce_env(raw: str, annotation: Any) -> Any:
    """Read an environment string as the field's type; leave it as text when it does not parse (the
    model then reports the type error, naming the variable)."""
    base = _unwrap(annotation)
    if base is bool:
        lowered = raw.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else raw
    if base is int:
        return _toml_value(raw)
    if get_origin(base) in (tuple, list):
        return (
            _toml_value(raw)
            if raw.lstrip().startswith("[")
            else [s.strip() for s in raw.split(",") if s.strip()]
        )
    if get_origin(base) is dict:
        return _toml_value(raw)
    return raw


def _unwrap(annotation: Any) -> Any:
    """``Annotated[str, ...] | None`` -> ``str``."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """``Config.load``: the file, then ``SDCLUSTER_*`` variables, then ``overrides``; validated."""
    env = os.environ if env is None else env
    file = Path(path if path is not None else env.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE).expanduser()
    data = read_toml(file) if file.exists() else {}
    origins: dict[str, str] = {}
    for key, value, var in env_values(env):
        set_dotted(data, key, value)
        origins[key] = var
    for key, value in flatten(overrides or {}):
        set_dotted(data, key, value)
        origins[key] = OVERRIDES
    if not file.exists() and "project" not in data:
        raise ConfigError(f"{file}: config file not found and no project given", hint=INIT_HINT)
    cfg = validate(data, source=str(file) if file.exists() else None, origins=origins)
    if file.exists() and "state.path" not in origins:  # written in the file, or the default
        cfg._state_base = str(file.parent)
    if file.exists() and "serving.model_dir" not in origins:  # relative to the file that says it
        cfg._model_base = str(file.parent)
    return cfg
