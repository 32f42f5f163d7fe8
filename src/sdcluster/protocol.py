"""The wire protocol between sdcluster and its emulator: the only product module the emulator imports.

- ``SDCLUSTER_EMULATOR=HOST:PORT`` selects the emulator (the real Google path is the default);
- the emulator's control service (JSON over gRPC): Info, Log, ClearLog, SetKnobs, Snapshot;
- the price snapshot shipped with sdcluster (``price_snapshot()``: Cloud Billing Catalog SKUs in the
  Catalog API's JSON shape, with their sources): the product's fallback when the Catalog API does not
  answer, and what the emulator's Catalog serves;
- bearer tokens name the caller: ``emulator:<member>``, and tokens the emulator mints for a service
  account carry their expiry: ``emulator:serviceAccount:<email>#<unix seconds>``. They are valid
  only against the emulator.

Example::

    token_for("user:me@example.com")             # 'emulator:user:me@example.com'
    parse_token("emulator:user:me@example.com")  # ('user:me@example.com', None)
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


def token_for(member: str, expiry: float | None = None) -> str:
    """The bearer token that names ``member`` (with an expiry for minted tokens)."""
    return f"{TOKEN_PREFIX}{member}" + (f"#{int(expiry)}" if expiry is not None else "")


def parse_token(token: str) -> tuple[str, float | None] | None:
    """(member, expiry or None) of an emulator token; None when it is not one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    member = token[len(TOKEN_PREFIX) :]
    if "#" in member:
        member, _, exp = member.rpartition("#")
        try:
            return member, float(exp)
        except ValueError:
            return None
    return member, None
