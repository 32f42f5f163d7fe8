"""Small helpers shared by tests (the emulator does not import the product, so tests build clients)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sdcluster.gcp.clients import ClientFactory


def factory(emu: Any, member: str | None = None) -> ClientFactory:
    """Official clients acting as ``member`` on ``emu`` (default: the emulated project's owner)."""
    return ClientFactory(user=member or emu.world.knobs.owner, emulator=emu.address)


def with_apis(*services: str) -> list[str]:
    """A new project's APIs plus ``services``: ``make_emu(enabled_services=with_apis(...))``."""
    from sdcluster.emulator.core import NEW_PROJECT_SERVICES

    return [*NEW_PROJECT_SERVICES, *services]


# Every API sdcluster uses already on (tests of one emulated API, not of a fresh project).
SDCLUSTER_APIS = with_apis(
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
)


def cloud_sdk_environ(
    home: Path, tokens: dict[str, Path], member: str, *, gcloud_config: Path, kubeconfig: Path
) -> dict[str, str]:
    """The environment Google's Cloud SDK tools (gcloud, gke-gcloud-auth-plugin) run with, acting as
    ``member`` on the emulator: a throwaway configuration, a token file per member (kept in
    ``tokens``) instead of a login, no prompts, update checks or usage reports. Add what
    ``sdcluster emulator env`` exports on top."""
    token = tokens.get(member)
    if token is None:
        token = home / f"token-{len(tokens)}"
        token.write_text(f"emulator:{member}")
        tokens[member] = token
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(gcloud_config),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "1",
        "KUBECONFIG": str(kubeconfig),
    }
