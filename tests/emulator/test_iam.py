"""IAM Admin, IAM Credentials, Resource Manager and Service Usage on the emulator.

Everything goes through the official client libraries built by ``factory(emu, member)``; each test
asserts what a user of GCP would see (codes and messages), including the eventual consistency of
new service accounts and of new bindings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import pytest
from google.api_core import exceptions as gexc
from google.cloud import service_usage_v1

from ..helpers import SDCLUSTER_APIS, factory

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
ALICE = "user:alice@example.com"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TOKEN_DENIED = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."


@pytest.fixture(scope="module")
def rejecting_emu() -> Iterator[Any]:
    """One emulator shared by the tests whose calls are all rejected (so they change nothing):
    each emulator takes about a second to stop, and the table-driven cases are many."""
    from sdcluster.emulator import Emulator

    with Emulator(operation_s=0.2, enabled_services=SDCLUSTER_APIS) as emu:
        yield emu


def email_of(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


def create_sa(emu: Any, account_id: str, member: str = OWNER) -> Any:
    return (
        factory(emu, member)
        .iam_admin()
        .create_service_account(
            request={
                "name": f"projects/{PROJECT}",
                "account_id": account_id,
                "service_account": {"display_name": f"{account_id} account", "description": "made by a test"},
            }
        )
    )


def grant(emu: Any, role: str, member: str, resource: str | None = None) -> Any:
    """Additive read-modify-write, as sdcluster does: on the project, or on a service account."""
    clients = factory(emu, OWNER)
    client = clients.iam_admin() if resource else clients.projects()
    resource = resource or f"projects/{PROJECT}"
    policy = client.get_iam_policy(request={"resource": resource})
    policy.bindings.add(role=role, members=[member])
    return client.set_iam_policy(request={"resource": resource, "policy": policy})


def mint(emu: Any, member: str, email: str, lifetime_s: int = 600) -> Any:
    creds = factory(emu, member).iam_credentials()
    return creds.generate_access_token(
        request={
            "name": f"projects/-/serviceAccounts/{email}",
            "scope": SCOPES,
            "lifetime": {"seconds": lifetime_s},
        }
    )


def eventually(fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Retry ``fn`` while it raises a GoogleAPICallError (eventual consistency), then return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except gexc.GoogleAPICallError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ---- service accounts --------------------------------------------------------------------------------


def test_service_account_lifecycle(emu: Any) -> None:
    iam = factory(emu, OWNER).iam_admin()
    sa = create_sa(emu, "gke-admin")
    email = email_of("gke-admin")
    assert sa.email == email
    assert sa.name == f"projects/{PROJECT}/serviceAccounts/{email}"
    assert sa.project_id == PROJECT
    assert len(sa.unique_id) == 21 and sa.unique_id.isdigit()
    assert sa.oauth2_client_id == sa.unique_id
    assert sa.display_name == "gke-admin account"
    assert sa.description == "made by a test"
    assert sa.etag

    # Every name form GCP accepts finds the same account.
    for name in (
        sa.name,
        f"projects/-/serviceAccounts/{email}",
        f"projects/-/serviceAccounts/{sa.unique_id}",
    ):
        assert iam.get_service_account(request={"name": name}).unique_id == sa.unique_id

    create_sa(emu, "gke-node")
    create_sa(emu, "extra-account")
    pager = iam.list_service_accounts(request={"name": f"projects/{PROJECT}", "page_size": 2})
    assert sorted(a.email for a in pager) == sorted(
        email_of(i) for i in ("gke-admin", "gke-node", "extra-account")
    )
    assert (
        len(list(iam.list_service_accounts(request={"name": f"projects/{PROJECT}", "page_size": 2}).pages))
        == 2
    )

    iam.delete_service_account(request={"name": sa.name})
    with pytest.raises(gexc.NotFound):
        iam.get_service_account(request={"name": sa.name})
    with pytest.raises(gexc.NotFound):
        iam.delete_service_account(request={"name": sa.name})


def test_duplicate_account_is_already_exists(emu: Any) -> None:
    create_sa(emu, "gke-admin")
    with pytest.raises(
        gexc.AlreadyExists, match="gke-admin already exists within project projects/demo-proj"
    ):
        create_sa(emu, "gke-admin")


@pytest.mark.parametrize(
    ("account_id", "message"),
    [
        ("short", "does not have a length between 6 and 30"),
        ("a" * 31, "does not have a length between 6 and 30"),
        ("Gke-Admin", "does not match"),
        ("1gke-admin", "does not match"),
        ("gke_admin", "does not match"),
        ("gke-admin-", "does not match"),
    ],
)
def test_bad_account_id_is_invalid_argument(rejecting_emu: Any, account_id: str, message: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match=message):
        create_sa(rejecting_emu, account_id)


def test_caller_without_role_cannot_create_accounts(emu: Any) -> None:
    with pytest.raises(gexc.PermissionDenied) as e:
        create_sa(emu, "gke-admin", member=ALICE)
    assert (
        e.value.message == "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist)."
    )


def test_deleted_account_bindings_are_not_inherited_by_a_new_one(emu: Any) -> None:
    iam = factory(emu, OWNER).iam_admin()
    sa = create_sa(emu, "gke-node")
    grant(emu, "roles/viewer", f"serviceAccount:{sa.email}")
    iam.delete_service_account(request={"name": sa.name})

    policy = factory(emu, OWNER).projects().get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    viewers = next(b.members for b in policy.bindings if b.role == "roles/viewer")
    assert list(viewers) == [f"deleted:serviceAccount:{sa.email}?uid={sa.unique_id}"]
    # The policy as read back (with its deleted: member) is writable again.
    factory(emu, OWNER).projects().set_iam_policy(
        request={"resource": f"projects/{PROJECT}", "policy": policy}
    )


# ---- policies ----------------------------------------------------------------------------------------


def test_project_policy_read_modify_write_and_stale_etag(emu: Any) -> None:
    rm = factory(emu, OWNER).projects()
    resource = f"projects/{PROJECT}"
    before = rm.get_iam_policy(request={"resource": resource})
    assert [(b.role, list(b.members)) for b in before.bindings] == [("roles/owner", [OWNER])]

    before.bindings.add(role="roles/viewer", members=[ALICE])
    before.bindings.add(role="roles/viewer", members=["group:team@example.com"])  # merged per role
    before.version = 3
    written = rm.set_iam_policy(request={"resource": resource, "policy": before})
    assert written.etag != before.etag

    after = rm.get_iam_policy(request={"resource": resource})
    assert after.version == 1  # written as version 3, but without conditions Google answers version 1
    assert after.etag == written.etag
    assert [(b.role, list(b.members)) for b in after.bindings] == [
        ("roles/owner", [OWNER]),
        ("roles/viewer", ["group:team@example.com", ALICE]),
    ]

    # A writer that read before the change above loses the compare-and-swap.
    with pytest.raises(gexc.Aborted, match="concurrent policy changes"):
        rm.set_iam_policy(request={"resource": resource, "policy": before})


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("alice@example.com", 'Policy members must be of the form "<type>:<value>"'),
        ("robot:alice@example.com", 'Policy members must be of the form "<type>:<value>"'),
        ("allUsers", "Project does not support allUsers"),
        (
            f"serviceAccount:{email_of('nobody-here')}",
            f"Service account {email_of('nobody-here')} does not exist.",
        ),
    ],
)
def test_bad_members_are_rejected(rejecting_emu: Any, member: str, message: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match=message):
        grant(rejecting_emu, "roles/viewer", member)


def test_google_managed_service_accounts_are_accepted(emu: Any) -> None:
    robot = "serviceAccount:service-123@container-engine-robot.iam.gserviceaccount.com"
    policy = grant(emu, "roles/container.serviceAgent", robot)
    assert any(robot in b.members for b in policy.bindings)


def test_owners_are_invited_not_granted_and_the_last_one_stays(emu: Any) -> None:
    with pytest.raises(gexc.InvalidArgument, match="SOLO_MUST_INVITE_OWNERS"):
        grant(emu, "roles/owner", "user:bob@example.com")
    rm = factory(emu, OWNER).projects()
    policy = rm.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    del policy.bindings[:]
    policy.bindings.add(role="roles/viewer", members=[OWNER])
    with pytest.raises(gexc.InvalidArgument, match="at least one owner"):
        rm.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})


def test_service_account_level_policy(emu: Any) -> None:
    sa = create_sa(emu, "gke-admin")
    iam = factory(emu, OWNER).iam_admin()
    empty = iam.get_iam_policy(request={"resource": sa.name})
    assert list(empty.bindings) == []

    written = grant(emu, TOKEN_CREATOR, ALICE, resource=f"projects/-/serviceAccounts/{sa.email}")
    assert [(b.role, list(b.members)) for b in written.bindings] == [(TOKEN_CREATOR, [ALICE])]
    assert iam.get_iam_policy(request={"resource": sa.name}).etag == written.etag
    with pytest.raises(gexc.Aborted):
        iam.set_iam_policy(request={"resource": sa.name, "policy": empty})

    # The binding on the account lets Alice mint its tokens, and only its tokens.
    assert mint(emu, ALICE, sa.email).access_token.startswith(f"emulator:serviceAccount:{sa.email}#")
    other = create_sa(emu, "gke-node")
    with pytest.raises(gexc.PermissionDenied):
        mint(emu, ALICE, other.email)
    # Reading the account's policy needs iam.serviceAccounts.getIamPolicy, which Alice lacks.
    with pytest.raises(gexc.PermissionDenied, match=r"iam\.serviceAccounts\.getIamPolicy"):
        factory(emu, ALICE).iam_admin().get_iam_policy(request={"resource": sa.name})


# ---- access tokens -----------------------------------------------------------------------------------


def test_owner_alone_cannot_mint_tokens(emu: Any) -> None:
    sa = create_sa(emu, "gke-admin")
    with pytest.raises(gexc.PermissionDenied) as e:
        mint(emu, OWNER, sa.email)
    assert e.value.message == TOKEN_DENIED


def test_service_account_user_is_not_enough_to_mint_tokens(emu: Any) -> None:
    sa = create_sa(emu, "gke-admin")
    grant(emu, "roles/iam.serviceAccountUser", ALICE)
    grant(emu, "roles/iam.serviceAccountUser", ALICE, resource=sa.name)
    with pytest.raises(gexc.PermissionDenied) as e:
        mint(emu, ALICE, sa.email)
    assert e.value.message == TOKEN_DENIED


def test_token_creator_works_only_after_iam_propagation(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(iam_propagation_s=1.0)
    sa = create_sa(emu, "gke-admin")
    grant(emu, TOKEN_CREATOR, OWNER)
    granted = time.monotonic()
    with pytest.raises(gexc.PermissionDenied):
        mint(emu, OWNER, sa.email)
    token = eventually(lambda: mint(emu, OWNER, sa.email, lifetime_s=900))
    assert time.monotonic() - granted >= 0.5  # generous: the binding did not work at once
    assert token.access_token.startswith(f"emulator:serviceAccount:{sa.email}#")
    remaining = token.expire_time.timestamp() - time.time()
    assert 800 < remaining <= 900


def test_token_lifetime_over_an_hour_is_invalid(emu: Any) -> None:
    sa = create_sa(emu, "gke-admin")
    grant(emu, TOKEN_CREATOR, OWNER, resource=sa.name)
    with pytest.raises(gexc.InvalidArgument, match="3600s"):
        mint(emu, OWNER, sa.email, lifetime_s=7200)


def test_impersonated_credentials_over_rest(emu: Any) -> None:
    sa = create_sa(emu, "gke-admin")
    clients = factory(emu, OWNER)
    request = google.auth.transport.requests.Request()

    denied = clients.impersonated(sa.email)
    with pytest.raises(google.auth.exceptions.RefreshError, match="getAccessToken"):
        denied.refresh(request)

    grant(emu, TOKEN_CREATOR, OWNER, resource=sa.name)
    grant(emu, "roles/viewer", f"serviceAccount:{sa.email}")
    admin = clients.impersonated(sa.email)
    admin.refresh(request)
    assert admin.valid
    assert str(admin.token).startswith(f"emulator:serviceAccount:{sa.email}#")

    # A client built with the impersonated credentials acts as the service account.
    project = clients.projects(admin).get_project(request={"name": f"projects/{PROJECT}"})
    assert project.project_id == PROJECT
    last = emu.log.entries()[-1]
    assert (last.method, last.caller, last.code) == ("GetProject", f"serviceAccount:{sa.email}", "OK")


def test_new_account_is_unusable_until_it_propagates(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(sa_propagation_s=1.0)
    grant(emu, TOKEN_CREATOR, OWNER)  # project-wide, so only the account's age matters
    sa = create_sa(emu, "gke-node")
    with pytest.raises(gexc.InvalidArgument, match=f"Service account {sa.email} does not exist."):
        grant(emu, "roles/logging.logWriter", f"serviceAccount:{sa.email}")
    with pytest.raises(gexc.NotFound, match="Gaia id not found"):
        mint(emu, OWNER, sa.email)
    # The account itself is readable at once; only its use as a member waits.
    assert factory(emu, OWNER).iam_admin().get_service_account(request={"name": sa.name}).email == sa.email

    eventually(lambda: grant(emu, "roles/logging.logWriter", f"serviceAccount:{sa.email}"))
    assert mint(emu, OWNER, sa.email).access_token


# ---- projects and services ---------------------------------------------------------------------------


def test_get_project_by_id_and_number(emu: Any) -> None:
    rm = factory(emu, OWNER).projects()
    project = rm.get_project(request={"name": f"projects/{PROJECT}"})
    assert project.project_id == PROJECT
    assert project.state.name == "ACTIVE"
    assert project.name.startswith("projects/") and project.name.split("/")[1].isdigit()
    assert project.create_time.timestamp() > 0
    assert rm.get_project(request={"name": project.name}).project_id == PROJECT


def test_unknown_project_is_permission_denied(emu: Any) -> None:
    clients = factory(emu, OWNER)
    with pytest.raises(gexc.PermissionDenied, match="nope-proj"):
        clients.projects().get_project(request={"name": "projects/nope-proj"})
    with pytest.raises(gexc.PermissionDenied):
        clients.iam_admin().list_service_accounts(request={"name": "projects/nope-proj"})
    with pytest.raises(gexc.PermissionDenied):
        mint(emu, OWNER, "someone@nope-proj.iam.gserviceaccount.com")


def test_disabled_api_says_how_to_enable_it(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(enabled_services=["serviceusage.googleapis.com"])
    clients = factory(emu, OWNER)

    def assert_disabled(err: Any, service: str) -> None:
        # Google's ErrorInfo: the reason and the service are machine-readable, not only in the text.
        assert (err.value.reason, err.value.domain) == ("SERVICE_DISABLED", "googleapis.com")
        assert err.value.metadata["service"] == service
        assert f"apis/api/{service}/overview" in err.value.message

    with pytest.raises(gexc.PermissionDenied) as err:
        create_sa(emu, "gke-admin")
    assert_disabled(err, "iam.googleapis.com")
    with pytest.raises(gexc.PermissionDenied) as err:
        clients.projects().get_project(request={"name": f"projects/{PROJECT}"})
    assert_disabled(err, "cloudresourcemanager.googleapis.com")

    def enable(*service_ids: str) -> None:
        clients.service_usage().batch_enable_services(
            request={"parent": f"projects/{PROJECT}", "service_ids": list(service_ids)}
        ).result(timeout=5)

    enable("iam.googleapis.com", "cloudresourcemanager.googleapis.com")
    sa = create_sa(emu, "gke-admin")
    grant(emu, TOKEN_CREATOR, OWNER, resource=sa.name)
    with pytest.raises(gexc.PermissionDenied) as err:
        mint(emu, OWNER, sa.email)
    assert_disabled(err, "iamcredentials.googleapis.com")
    enable("iamcredentials.googleapis.com")
    assert mint(emu, OWNER, sa.email).access_token


def test_service_usage_enable_get_and_list(emu: Any) -> None:
    su = factory(emu, OWNER).service_usage()
    name = f"projects/{PROJECT}/services/secretmanager.googleapis.com"
    assert su.get_service(request={"name": name}).state == service_usage_v1.State.DISABLED

    operation = su.enable_service(request={"name": name})
    assert operation.done()  # already done: .result() needs no polling
    response = operation.result(timeout=5)
    assert response.service.state == service_usage_v1.State.ENABLED
    assert response.service.config.name == "secretmanager.googleapis.com"
    assert su.get_service(request={"name": name}).state == service_usage_v1.State.ENABLED

    enabled = {
        s.config.name
        for s in su.list_services(request={"parent": f"projects/{PROJECT}", "filter": "state:ENABLED"})
    }
    assert {"secretmanager.googleapis.com", "container.googleapis.com", "iam.googleapis.com"} <= enabled
    everything = {
        s.config.name for s in su.list_services(request={"parent": f"projects/{PROJECT}", "page_size": 3})
    }
    assert enabled < everything

    batch = su.batch_get_services(
        request={
            "parent": f"projects/{PROJECT}",
            "names": [name, f"projects/{PROJECT}/services/pubsub.googleapis.com"],
        }
    )
    assert [s.state for s in batch.services] == [
        service_usage_v1.State.ENABLED,
        service_usage_v1.State.DISABLED,
    ]
    assert not any(e.method == "GetOperation" for e in emu.log.entries())

    with pytest.raises(gexc.PermissionDenied, match="Not found or permission denied for service"):
        su.enable_service(request={"name": f"projects/{PROJECT}/services/no-such-api.googleapis.com"})
    with pytest.raises(gexc.PermissionDenied, match=r"serviceusage\.services\.enable"):
        factory(emu, ALICE).service_usage().enable_service(request={"name": name})


def test_request_log_names_callers_codes_and_mutations(emu: Any) -> None:
    emu.log.clear()
    sa = create_sa(emu, "gke-admin")
    with pytest.raises(gexc.PermissionDenied):
        mint(emu, ALICE, sa.email)
    factory(emu, OWNER).iam_admin().get_service_account(request={"name": sa.name})

    rows = [(e.service, e.method, e.caller, e.code, e.mutating) for e in emu.log.entries()]
    assert rows == [
        ("iam", "CreateServiceAccount", OWNER, "OK", True),
        ("iamcredentials", "GenerateAccessToken", ALICE, "PERMISSION_DENIED", False),
        ("iam", "GetServiceAccount", OWNER, "OK", False),
    ]
    assert [e.method for e in emu.log.mutating()] == ["CreateServiceAccount"]
