"""The shell lines that point Google's own tools (gcloud, gsutil-free ``gcloud storage``, kubectl
through gke-gcloud-auth-plugin) and sdcluster at a running emulator (``sdcluster emulator env``).

gcloud joins an endpoint override with the API's ``servicePath`` and the method path, so each
override is the API's prefix on the emulator's HTTP address plus the discovery document's
``servicePath`` (``http://EMU/container/``, ``http://EMU/compute/compute/v1/``); Cloud Storage's
points at the storage emulator's own address.

Example::

    for line in export_lines(emu.info()):
        print(line)
"""

from __future__ import annotations

from typing import Any

from ..protocol import ENV_EMULATOR
from .rest import APIS, service_path


def endpoint_overrides(info: dict[str, Any]) -> dict[str, str]:
    """``{"CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER": "http://127.0.0.1:P/container/", ...}``.

    ``info`` is the emulator's Info (``Emulator.info()``, or the Control service's ``Info``).
    """
    out: dict[str, str] = {}
    for api in APIS:
        name = f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.prefix.upper()}"
        out.setdefault(name, f"http://{info['http']}/{api.prefix}/{service_path(api.document)}")
    out["CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE"] = f"http://{info['storage']}/storage/v1/"
    return out


def export_lines(info: dict[str, Any]) -> list[str]:
    """Shell lines for a running emulator: sdcluster's address, gcloud's project and overrides, and
    how to give gcloud an identity (a token file naming the member, never a real credential)."""
    owner = str(info["owner"])
    lines = [
        f"export {ENV_EMULATOR}={info['grpc']}",
        f"export CLOUDSDK_CORE_PROJECT={info['project']}",
        *(f"export {k}={v}" for k, v in endpoint_overrides(info).items()),
        "# gcloud's identity on the emulator: a token file naming the member (emulator:<member>), e.g.",
        f"#   printf 'emulator:{owner}' > \"$HOME/.sdcluster-emulator-token\"",
        'export CLOUDSDK_AUTH_ACCESS_TOKEN_FILE="$HOME/.sdcluster-emulator-token"',
    ]
    return lines
