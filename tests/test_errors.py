"""The errors a user actually meets: each becomes one sdcluster error with a remediation hint, and the
CLI prints ``Error:``/``Hint:`` without a traceback. Library exceptions are the real classes the
client libraries raise; our own errors are produced by the code paths that raise them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import typer
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.rpc import error_details_pb2
from typer.testing import CliRunner

import sdcluster
from sdcluster import errors
from sdcluster.errors import translate
from sdcluster.ui.common import command as _errors

from .helpers import SDCLUSTER_APIS, factory


def _config_error(**kw: Any) -> Exception:
    try:
        sdcluster.Config.build(project="demo-proj", user="user:a@example.com", **kw)
    except errors.SdclusterError as e:
        return e
    raise AssertionError("config was accepted")


def _stale_plan() -> Exception:
    from sdcluster.engine import Plan, check_fresh
    from sdcluster.state import State

    try:
        check_fresh(Plan(changes=[], lineage=None, serial=0), State.new())
    except errors.SdclusterError as e:
        return e
    raise AssertionError("not stale")


def _locked() -> Exception:
    from sdcluster.state import LockInfo, locked_error

    return locked_error(
        LockInfo(operation="apply", pid=4121, host="ws-7", started_at="2026-11-29T10:00:00+00:00"), "s.json"
    )


SERVICE_DISABLED = (
    "Kubernetes Engine API has not been used in project 123 before or it is disabled. Enable it by visiting "
    "https://console.developers.google.com/apis/api/container.googleapis.com/overview?project=123 then retry."
)

# googlecodelabs/feedback#950, GoogleCloudPlatform/cloud-ops-sandbox#44
GKE_QUOTA = (
    "Insufficient regional quota to satisfy request: resource \"N2_CPUS\": request requires '4.0' and is short "
    "'2.0'. project has a quota of '2.0' with '2.0' available. View and manage quotas at "
    "https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=demo-proj."
)

CASES: list[tuple[str, Callable[[], Exception], type[errors.SdclusterError], str, str]] = [
    (
        "no ADC",
        lambda: translate(auth_exc.DefaultCredentialsError("Your default credentials were not found.")),
        errors.CredentialsError,
        "no Application Default Credentials",
        "gcloud auth application-default login",
    ),
    (
        "expired credentials",
        lambda: translate(auth_exc.RefreshError("invalid_grant: Token has been expired or revoked.")),
        errors.CredentialsError,
        "could not be refreshed",
        "gcloud auth application-default login",
    ),
    (
        "clock skew",
        lambda: translate(auth_exc.TransportError("SSL: certificate has expired or is not yet valid")),
        errors.CredentialsError,
        "clock",
        "sync this machine's clock",
    ),
    (
        "API not enabled",
        lambda: translate(gexc.PermissionDenied(SERVICE_DISABLED), project="demo-proj"),
        errors.ApiDisabled,
        "container.googleapis.com API is not enabled",
        "gcloud services enable container.googleapis.com --project demo-proj",
    ),
    (
        "API not enabled, named by its ErrorInfo",
        lambda: translate(
            gexc.PermissionDenied(
                "The API is not enabled for this project.",
                error_info=error_details_pb2.ErrorInfo(
                    reason="SERVICE_DISABLED",
                    domain="googleapis.com",
                    metadata={"service": "compute.googleapis.com", "consumer": "projects/123"},
                ),
            ),
            project="demo-proj",
        ),
        errors.ApiDisabled,
        "compute.googleapis.com API is not enabled",
        "gcloud services enable compute.googleapis.com --project demo-proj",
    ),
    (
        "GKE's quota 403",
        lambda: translate(gexc.PermissionDenied(GKE_QUOTA), project="demo-proj"),
        errors.QuotaExceeded,
        "quota N2_CPUS exceeded in the region: the cluster needs 4.0, 2.0 of the limit 2.0 are free (short by 2.0)",
        "request more N2_CPUS quota",
    ),
    (
        "impersonating an account IAM Credentials does not know (yet)",
        lambda: translate(
            auth_exc.RefreshError(
                "Unable to acquire impersonated credentials",
                '{"error": {"code": 404, "message": "Not found; Gaia id not found for email '
                'gke-admin@demo-proj.iam.gserviceaccount.com", "status": "NOT_FOUND"}}',
            )
        ),
        errors.NotFound,
        "the service account to impersonate was not found",
        "IAM is still propagating it",
    ),
    (
        "permission denied",
        lambda: translate(
            gexc.PermissionDenied(
                "Permission 'resourcemanager.projects.setIamPolicy' denied on resource 'projects/p'."
            )
        ),
        errors.PermissionDenied,
        "resourcemanager.projects.setIamPolicy",
        "a role that contains resourcemanager.projects.setIamPolicy",
    ),
    (
        "impersonation denied",
        lambda: translate(
            gexc.PermissionDenied(
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
            )
        ),
        errors.PermissionDenied,
        "getAccessToken",
        "roles/iam.serviceAccountTokenCreator",
    ),
    (
        "quota exceeded",
        lambda: translate(
            gexc.ResourceExhausted("Quota 'N2_CPUS' exceeded. Limit: 8.0 in region us-central1.")
        ),
        errors.QuotaExceeded,
        "quota N2_CPUS exceeded: limit 8.0 in region us-central1",
        "request more N2_CPUS quota",
    ),
    (
        "zone given as a region",
        lambda: _config_error(cluster={"zone": "us-central1"}),
        errors.ConfigError,
        "is a region, not a zone",
        "zone",
    ),
    (
        "invalid config",
        lambda: _config_error(cluster={"machine_tpye": "n2-standard-4"}),
        errors.ConfigError,
        "machine_tpye",
        "machine_type",
    ),
    (
        "state locked",
        _locked,
        errors.StateLocked,
        "locked by pid 4121 on host ws-7 (apply) since 2026-11-29",
        "force-unlock",
    ),
    (
        "stale saved plan",
        _stale_plan,
        errors.StalePlan,
        "the plan was made from state serial 0",
        "make a new plan",
    ),
    (
        "transient",
        lambda: translate(gexc.ServiceUnavailable("The service is currently unavailable.")),
        errors.TransientError,
        "currently unavailable",
        "run the command again",
    ),
]


@pytest.mark.parametrize(("name", "make", "cls", "message", "hint"), CASES, ids=[c[0] for c in CASES])
def test_each_error_is_classified_with_a_remediation(
    name: str, make: Callable[[], Exception], cls: type[Exception], message: str, hint: str
) -> None:
    err = make()
    assert isinstance(err, cls), f"{name}: {type(err).__name__}: {err}"
    assert message in str(err)
    assert hint in err.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "make", "cls", "message", "hint"), CASES, ids=[c[0] for c in CASES])
def test_the_cli_prints_error_and_hint_without_traceback(
    name: str, make: Callable[[], Exception], cls: type[Exception], message: str, hint: str
) -> None:
    probe = typer.Typer()

    @probe.command()
    @_errors
    def fail() -> None:
        raise make()

    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("Error: ") and message.split(" ")[0] in lines[0]
    assert any(line.startswith("Hint: ") and hint.split(" ")[0] in line for line in lines)
    assert "Traceback" not in result.output


def test_iam_propagation_timeout_says_how_long_and_what_to_check(
    make_emu: Callable[..., Any], tmp_path: Any
) -> None:
    from sdcluster.gcp.clients import ClientFactory
    from sdcluster.gcp.context import GcpContext

    emu = make_emu(enabled_services=SDCLUSTER_APIS)
    cfg = sdcluster.Config.build(
        project="demo-proj", user="user:demo@example.com", iam={"propagation_timeout_s": 1}
    )
    # gke-admin exists but the user was never granted the token creator role on it.
    from google.cloud import iam_admin_v1

    factory(emu).iam_admin().create_service_account(
        request=iam_admin_v1.CreateServiceAccountRequest(name="projects/demo-proj", account_id="gke-admin")
    )
    ctx = GcpContext(cfg, ClientFactory.for_user(cfg.user, emu.address))
    with pytest.raises(errors.WaitTimeout) as err:
        ctx.admin_credentials()
    assert "waiting for permission to impersonate gke-admin@demo-proj.iam.gserviceaccount.com" in str(
        err.value
    )
    assert "timed out after 1" in str(err.value)
    assert "roles/iam.serviceAccountTokenCreator" in err.value.hint and "get-iam-policy" in err.value.hint
