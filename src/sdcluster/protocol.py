"""The wire protocol between sdcluster and its emulator: the only product module the emulator imports.

- ``SDCLUSTER_EMULATOR=HOST:PORT`` selects the emulator (the real Google path is the default);
- the emulator's control service (JSON over gRPC): Info, Log, ClearLog, SetKnobs, Snapshot;
- the price snapshot shipped with sdcluster (``price_snapshot()``: Cloud Billing Catalog SKUs in the
  Catalog API's JSON shape, with their sources): the product's fallback when the Catalog API does not
  answer, and what the emulator's Catalog serves;
- bearer tokens name the caller: ``emulator:<member>``, and tokens the emulator mints for a service
  account carry their expiry and OAuth scopes:
  ``emulator:serviceAccount:<email>#<unix seconds>[#<scope>,<scope>...]`` (Google keeps a token's
  scopes server-side; the emulator's services read them from the token). They are valid only
  against the emulator.

Example::

    token_for("user:me@example.com")             # 'emulator:user:me@example.com'
    parse_token("emulator:user:me@example.com")  # ('user:me@example.com', None, None)
"""

from __future__ import annotations

import json
from typing import Any

ENV_EMULATOR = "SDCLUSTER_EMULATOR"
CONTROL_SERVICE = "sdcluster.emulator.v1.Control"
TOKEN_PREFIX = "emulator:"
PRICE_SNAPSHOT = "data/prices_snapshot.json"  # package data of sdcluster


def price_snapshot() -> dict[str, Any]:
    """The shipped price snapshot: ``{"as_of", "services", "skus", "sources", "citations", ...}``."""
    from importlib import resources

    text = resources.files("sdcluster").joinpath(PRICE_SNAPSHOT).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def token_for(member: str, expiry: float | None = None, scopes: list[str] | None = None) -> str:
    """The bearer token that names ``member`` (with an expiry, and scopes, for minted tokens)."""
    token = f"{TOKEN_PREFIX}{member}"
    if expiry is not None:
        token += f"#{int(expiry)}"
        if scopes:
            token += "#" + ",".join(scopes)
    return token


def parse_token(token: str) -> tuple[str, float | None, tuple[str, ...] | None] | None:
    """(member, expiry or None, scopes or None) of an emulator token; None when it is not one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    member, *rest = token[len(TOKEN_PREFIX) :].split("#")
    if not rest:
        return member, None, None
    try:
        expiry = float(rest[0])
    except ValueError:
        return None
    scopes = tuple(s for s in rest[1].split(",") if s) if len(rest) > 1 else None
    return member, expiry, scopes
