"""Writing ``sdcluster.toml``: a commented file whose defaults are shown, read back to an equal Config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sdcluster.errors import ConfigError

from .model import SECTIONS, Config
from .rules import normalize_member, toml_literal
from .sources import flatten, set_dotted

# --------------------------------------------------------------------------------------------------
# Rendering sdcluster.toml.

# Shown (commented) for fields whose default is "unset".
_EXAMPLES: dict[str, Any] = {
    "cluster.accelerator_type": "nvidia-tesla-t4",
    "cluster.labels": {"team": "ml"},
    "cluster.subnetwork": "default",
    "serving.idle_stop_minutes": 30,
}


def render_toml(cfg_or_fields: Config | Mapping[str, Any]) -> str:
    """A commented ``sdcluster.toml``: values that differ from the defaults are set, the defaults are
    shown commented out. ``Config.load`` reads it back to an equal Config.

    Example: ``render_toml({"project": "demo-proj", "user": "user:me@example.com"})``.
    """
    cfg = cfg_or_fields if isinstance(cfg_or_fields, Config) else Config.from_dict(cfg_or_fields)
    lines = [
        "# sdcluster configuration. Commented lines show defaults; uncomment a line to change it.",
        "# Precedence: this file < SDCLUSTER_* environment variables < command-line flags.",
        "",
    ]
    examples = {**_EXAMPLES, "bucket.location": cfg.region}
    lines += _render_fields(cfg, Config, "", examples)
    for section, model in SECTIONS.items():
        lines += ["", f"[{section}]", *_render_fields(getattr(cfg, section), model, section + ".", examples)]
    return "\n".join(lines) + "\n"


def _render_fields(
    values: BaseModel, model: type[BaseModel], prefix: str, examples: Mapping[str, Any]
) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if name in SECTIONS and model is Config:
            continue
        value = getattr(values, name)
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {field.description}")
        if value != default or field.is_required():
            lines.append(f"{name} = {toml_literal(value)}")
        else:
            lines.append(f"# {name} = {toml_literal(examples.get(prefix + name, default))}")
    return lines


def write_init(path: str | os.PathLike[str], *, force: bool, **fields: Any) -> Path:
    """Write a new ``sdcluster.toml`` for ``sdcluster init``; refuses to overwrite without ``force``.

    ``fields`` are top-level values, sections as dicts, or dotted keys (``**{"cluster.zone": z}``);
    ``None`` values are skipped and a bare email ``user`` becomes ``user:EMAIL``.

    Example: ``write_init("sdcluster.toml", force=False, project="demo-proj", user="me@example.com")``.
    """
    target = Path(path)
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists", hint="pass --force to overwrite it")
    data: dict[str, Any] = {}
    for key, value in flatten(fields):
        set_dotted(data, key, value)
    if isinstance(data.get("user"), str):
        data["user"] = normalize_member(data["user"])
    text = render_toml(data)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written config
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"{target}: cannot write the config file: {e}", hint="check the path and permissions"
        ) from e
    return target
