"""Cloud Storage on the emulator, through the official google-cloud-storage client.

The client is the one sdcluster builds (``factory(emu, member).storage(project)``): it sends the
member's ``emulator:`` bearer token to the emulator's HTTP endpoint. Each test asserts what a GCS
user would see: metadata read back as written, GCS's status codes and messages, permissions from
the project and bucket policies, retried faults, and data that survives a restart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud.storage import transfer_manager
from google.cloud.storage.retry import DEFAULT_RETRY

from ..helpers import factory

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
ALICE = "user:alice@example.com"
FAST_RETRY: Retry = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    """One emulator for the tests that each work in their own bucket (an emulator takes ~1 s to stop)."""
    from sdcluster.emulator import Emulator

    with Emulator(operation_s=0.2) as e:
        yield e


def new_bucket(emu: Any, name: str, member: str = OWNER, **fields: Any) -> Any:
    """Create ``name`` as sdcluster does: uniform access, public access prevention, labels, a region."""
    client = factory(emu, member).storage(PROJECT)
    bucket = client.bucket(name)
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    bucket.iam_configuration.public_access_prevention = "enforced"
    bucket.labels = {"managed-by": "sdcluster"}
    for key, value in fields.items():
        setattr(bucket, key, value)
    return client.create_bucket(bucket, location="us-central1")


# ---- buckets -----------------------------------------------------------------------------------------


def test_create_bucket_applies_its_metadata_like_gcs(emu: Any) -> None:
    new_bucket(emu, "meta-bucket", versioning_enabled=True, storage_class="NEARLINE")
    client = factory(emu, OWNER).storage(PROJECT)

    got = client.get_bucket("meta-bucket")
    assert got.location == "US-CENTRAL1"  # GCS upper-cases the location it was given
    assert got.location_type == "region"
    assert got.labels == {"managed-by": "sdcluster"}
    assert got.iam_configuration.uniform_bucket_level_access_enabled is True
    assert got.iam_configuration.uniform_bucket_level_access_locked_time is not None
    assert got.iam_configuration.public_access_prevention == "enforced"
    assert got.versioning_enabled is True
    assert got.storage_class == "NEARLINE"
    assert got.metageneration == 1 and got.etag == "CAE="
    assert got.project_number == int(emu.world.project(PROJECT)["number"])
    assert "meta-bucket" in [b.name for b in client.list_buckets()]
    # The client sent the member's bearer token: the log names the caller of each request.
    created = [
        e
        for e in emu.log.entries()
        if e.resource == f"projects/{PROJECT}" and e.method == "POST /storage/v1/b"
    ]
    assert [(e.caller, e.code, e.mutating) for e in created][-1] == (OWNER, "OK", True)

    got.labels = {"managed-by": "sdcluster", "team": "ml"}
    got.patch()
    again = client.get_bucket("meta-bucket")
    assert again.labels == {"managed-by": "sdcluster", "team": "ml"}
    assert again.metageneration == 2 and again.location == "US-CENTRAL1"

    again.labels = {"managed-by": "sdcluster"}  # the client sends "team": null, which deletes it
    again.storage_class = "PLATINUM"
    with pytest.raises(gexc.BadRequest, match="Invalid storage class: PLATINUM"):
        again.patch()
    assert client.get_bucket("meta-bucket").labels == {"managed-by": "sdcluster", "team": "ml"}  # unchanged
    again.storage_class = "NEARLINE"
    again.patch()
    assert client.get_bucket("meta-bucket").labels == {"managed-by": "sdcluster"}


def test_duplicate_bucket_is_conflict(emu: Any) -> None:
    new_bucket(emu, "dup-bucket")
    with pytest.raises(gexc.Conflict, match="you already own it"):
        new_bucket(emu, "dup-bucket")


@pytest.mark.parametrize(
    ("name", "location", "message"),
    [
        ("Upper-Case", "us-central1", "Invalid bucket name: 'Upper-Case'"),
        ("ab", "us-central1", "Invalid bucket name: 'ab'"),
        ("fine-name", "moon-base1x", "The specified location constraint is not valid."),
    ],
)
def test_invalid_bucket_is_bad_request(emu: Any, name: str, location: str, message: str) -> None:
    client = factory(emu, OWNER).storage(PROJECT)
    with pytest.raises(gexc.BadRequest, match=re.escape(message)):
        client.create_bucket(name, location=location)


def test_member_without_role_is_forbidden_with_the_permission_named(emu: Any) -> None:
    new_bucket(emu, "owned-bucket")
    alice = factory(emu, ALICE).storage(PROJECT)
    with pytest.raises(gexc.Forbidden) as create:
        alice.create_bucket("alice-bucket", location="us-central1")
    assert create.value.message.endswith(  # google-cloud-core prefixes "POST <url>: "
        "alice@example.com does not have storage.buckets.create access to the Google Cloud project. "
        "Permission 'storage.buckets.create' denied on resource (or it may not exist)."
    )
    with pytest.raises(
        gexc.Forbidden, match=re.escape("storage.buckets.get access to the Google Cloud Storage bucket")
    ):
        alice.get_bucket("owned-bucket")
    with pytest.raises(gexc.Forbidden, match=re.escape("storage.objects.list")):
        list(alice.list_blobs("owned-bucket"))
    with pytest.raises(gexc.NotFound, match=re.escape("The specified bucket does not exist.")):
        alice.get_bucket("no-such-bucket")

    denied = [e for e in emu.log.entries() if e.caller == ALICE and e.code == "PERMISSION_DENIED"]
    assert [(e.method, e.resource, e.mutating) for e in denied][:2] == [
        ("POST /storage/v1/b", f"projects/{PROJECT}", True),
        ("GET /storage/v1/b/{bucket}", "projects/_/buckets/owned-bucket", False),
    ]
    assert not [e for e in emu.log.mutating() if e.caller == ALICE]


@pytest.mark.parametrize(
    ("authorization", "message", "reason"),
    [
        (None, "Anonymous caller does not have storage.buckets.create access", "required"),
        ("Bearer ya29.not-an-emulator-token", "Invalid Credentials", "authError"),
    ],
)
def test_unauthenticated_caller_is_unauthorized(
    emu: Any, authorization: str | None, message: str, reason: str
) -> None:
    # Raw HTTP: on a 401 the official client asks its credentials to refresh, which anonymous or
    # foreign credentials cannot do, so the client never shows GCS's answer itself.
    headers = {"Authorization": authorization} if authorization else {}
    reply = requests.post(
        f"http://{emu.storage_address}/storage/v1/b",
        params={"project": PROJECT},
        json={"name": "anon-bucket", "location": "us-central1"},
        headers=headers,
        timeout=10,
    )
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == 401 and message in error["message"]
    assert error["errors"][0]["reason"] == reason
    assert emu.log.entries()[-1].code == "UNAUTHENTICATED"


def test_unknown_project_is_permission_denied(emu: Any) -> None:
    client = factory(emu, OWNER).storage("no-such-project")
    with pytest.raises(gexc.Forbidden, match="Permission denied on resource project no-such-project"):
        client.create_bucket("orphan-bucket", location="us-central1")


def test_non_empty_bucket_delete_is_conflict(emu: Any) -> None:
    bucket = new_bucket(emu, "full-bucket")
    bucket.blob("model/saved_model.pb").upload_from_string(b"weights")
    with pytest.raises(gexc.Conflict, match=re.escape("The bucket you tried to delete is not empty.")):
        bucket.delete()
    assert emu.log.entries()[-1].code == "FAILED_PRECONDITION"

    bucket.delete(force=True)  # deletes the objects one by one, then the bucket
    assert factory(emu, OWNER).storage(PROJECT).lookup_bucket("full-bucket") is None


# ---- bucket IAM --------------------------------------------------------------------------------------


def test_bucket_policy_grants_object_access_with_etag_checks(emu: Any) -> None:
    bucket = new_bucket(emu, "shared-bucket")
    bucket.blob("model/config.json").upload_from_string(b"{}")

    policy = bucket.get_iam_policy(requested_policy_version=3)
    assert policy.etag == "CAE="
    assert {b["role"] for b in policy.bindings} == {
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketReader",
    }
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {ALICE}})
    written = bucket.set_iam_policy(policy)
    assert written.etag == "CAI="
    assert bucket.get_iam_policy(requested_policy_version=3).etag == "CAI="

    policy.bindings.append({"role": "roles/storage.objectAdmin", "members": {"group:x@example.com"}})
    with pytest.raises(gexc.PreconditionFailed):  # the etag read before the write above is stale
        bucket.set_iam_policy(policy)

    as_alice = factory(emu, ALICE).storage(PROJECT).bucket("shared-bucket")
    assert as_alice.blob("model/config.json").download_as_bytes() == b"{}"
    assert [b.name for b in as_alice.list_blobs()] == ["model/config.json"]
    with pytest.raises(
        gexc.Forbidden, match=re.escape("storage.objects.create access to the Google Cloud Storage object")
    ):
        as_alice.blob("model/evil.bin").upload_from_string(b"x")
    with pytest.raises(gexc.Forbidden, match=re.escape("storage.buckets.getIamPolicy")):
        as_alice.get_iam_policy()
    assert as_alice.test_iam_permissions(["storage.objects.get", "storage.objects.delete"]) == [
        "storage.objects.get"
    ]


def test_public_members_are_refused_when_public_access_is_prevented(emu: Any) -> None:
    bucket = new_bucket(emu, "private-bucket")
    policy = bucket.get_iam_policy()
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"allUsers"}})
    with pytest.raises(gexc.PreconditionFailed, match="public access prevention is enforced"):
        bucket.set_iam_policy(policy)


# ---- objects -----------------------------------------------------------------------------------------


def test_large_and_parallel_uploads_round_trip(emu: Any, tmp_path: Path) -> None:
    bucket = new_bucket(emu, "upload-bucket")
    big = tmp_path / "saved_model.pb"
    big.write_bytes(os.urandom(20 * 1024 * 1024))  # above 8 MiB: a resumable upload
    bucket.blob("model/saved_model.pb").upload_from_filename(str(big))
    names = []
    for i in range(4):
        (tmp_path / f"var{i}").write_bytes(os.urandom(100_000))
        names.append(f"var{i}")
    results = transfer_manager.upload_many_from_filenames(
        bucket,
        names,
        source_directory=str(tmp_path),
        blob_name_prefix="model/variables/",
        worker_type=transfer_manager.THREAD,
        raise_exception=True,
    )
    assert results == [None] * 4

    out = tmp_path / "downloaded"
    bucket.blob("model/saved_model.pb").download_to_filename(str(out))
    assert out.read_bytes() == big.read_bytes()
    var3 = bucket.get_blob("model/variables/var3")
    assert var3 is not None and var3.size == 100_000
    var3.metadata = {"step": "42"}
    var3.patch()
    assert bucket.get_blob("model/variables/var3").metadata == {"step": "42"}  # type: ignore[union-attr]
    with pytest.raises(gexc.PreconditionFailed):  # "create only" when the object exists
        bucket.blob("model/variables/var0").upload_from_string(b"x", if_generation_match=0)


def test_injected_faults_are_retried_by_the_client(make_emu: Any) -> None:
    emu = make_emu(seed=7)
    bucket = new_bucket(emu, "flaky-bucket")
    emu.world.knobs.fault_rate = 0.3
    for i in range(20):
        bucket.blob(f"part-{i}").upload_from_string(f"part {i}".encode(), retry=FAST_RETRY)
    emu.world.knobs.fault_rate = 0.0

    assert len(list(bucket.list_blobs())) == 20
    uploads = [e for e in emu.log.entries() if e.method == "POST /upload/storage/v1/b/{bucket}/o"]
    assert sum(e.code == "OK" for e in uploads) == 20
    assert sum(e.code == "UNAVAILABLE" for e in uploads) >= 1  # 503s happened, and were retried


def test_buckets_objects_and_policies_survive_a_restart(tmp_path: Path) -> None:
    from sdcluster.emulator import Emulator

    state = str(tmp_path / "emulator.json")
    with Emulator(state_file=state) as first:
        bucket = new_bucket(first, "kept-bucket")
        bucket.blob("model/saved_model.pb").upload_from_string(b"weights")
        policy = bucket.get_iam_policy()
        policy.bindings.append({"role": "roles/storage.objectViewer", "members": {ALICE}})
        bucket.set_iam_policy(policy)
    assert os.path.isdir(state + ".storage")

    with Emulator(state_file=state) as second:
        client = factory(second, OWNER).storage(PROJECT)
        kept = client.get_bucket("kept-bucket")
        assert kept.location == "US-CENTRAL1"
        assert kept.blob("model/saved_model.pb").download_as_bytes() == b"weights"
        as_alice = factory(second, ALICE).storage(PROJECT).bucket("kept-bucket")
        assert as_alice.blob("model/saved_model.pb").download_as_bytes() == b"weights"


# ---- who a workload is: Workload Identity principals and OAuth scopes -------------------------------


def _list_as(emu: Any, bucket: str, member: str, scopes: list[str] | None = None) -> requests.Response:
    """List the bucket over the JSON API with a token the emulator minted for ``member``."""
    token, _ = emu.world.mint_token(member, 600, scopes)
    return requests.get(
        f"http://{emu.storage_address}/storage/v1/b/{bucket}/o",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_a_workload_identity_principal_reads_only_where_it_is_granted(emu: Any) -> None:
    bucket = new_bucket(emu, "wi-bucket")
    bucket.blob("m/1/saved_model.pb").upload_from_string(b"pb")
    number = emu.world.project(PROJECT)["number"]
    pool = f"projects/{number}/locations/global/workloadIdentityPools/{PROJECT}.svc.id.goog"
    serving = f"principal://iam.googleapis.com/{pool}/subject/ns/default/sa/tf-serving"
    other = f"principal://iam.googleapis.com/{pool}/subject/ns/default/sa/default"
    denied = _list_as(emu, "wi-bucket", serving)
    assert denied.status_code == 403
    assert "does not have storage.objects.list access" in denied.json()["error"]["message"]

    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {serving}})
    # GKE's pool exists only once the project has a cluster with Workload Identity.
    with pytest.raises(gexc.BadRequest, match=rf"Identity Pool does not exist \({PROJECT}\.svc\.id\.goog\)"):
        bucket.set_iam_policy(policy)
    emu.world.add_workload_pool(f"{PROJECT}.svc.id.goog")  # what creating such a cluster does
    bucket.set_iam_policy(policy)
    listed = _list_as(emu, "wi-bucket", serving)
    assert listed.status_code == 200 and [o["name"] for o in listed.json()["items"]] == ["m/1/saved_model.pb"]
    assert _list_as(emu, "wi-bucket", other).status_code == 403  # another KSA is another principal

    # A principalSet grants every KSA of a namespace.
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append(
        {
            "role": "roles/storage.objectViewer",
            "members": {f"principalSet://iam.googleapis.com/{pool}/namespace/default"},
        }
    )
    bucket.set_iam_policy(policy)
    assert _list_as(emu, "wi-bucket", other).status_code == 200


def test_a_malformed_principal_is_refused_in_a_bucket_policy(emu: Any) -> None:
    bucket = new_bucket(emu, "wi-bad-bucket")
    policy = bucket.get_iam_policy(requested_policy_version=3)
    bad = f"principal://iam.googleapis.com/projects/{PROJECT}/locations/global/workloadIdentityPools/x/subject/y"
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {bad}})
    with pytest.raises(gexc.BadRequest, match="is not valid"):
        bucket.set_iam_policy(policy)  # the pool is named by project number, not id


def test_a_token_without_a_storage_scope_is_refused_whatever_the_roles(emu: Any) -> None:
    new_bucket(emu, "scoped-bucket")
    logging_only = ["https://www.googleapis.com/auth/logging.write"]
    refused = _list_as(emu, "scoped-bucket", OWNER, logging_only)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "Provided scope(s) are not authorized"
    read_only = ["https://www.googleapis.com/auth/devstorage.read_only"]
    assert _list_as(emu, "scoped-bucket", OWNER, read_only).status_code == 200
