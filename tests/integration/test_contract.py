"""Promises of the library that only luck used to keep: the lock around a library apply, a state
write after every change (and a pending record before every create), gke-admin as the caller that
creates the cluster, GKE denials retried while this run's bindings propagate, the impersonation
lifetime, and a Kubernetes API that refuses connections while its control plane restarts."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from google.iam.v1 import iam_policy_pb2

import sdcluster
from sdcluster import retry
from sdcluster.engine import Event
from sdcluster.errors import StateLocked
from sdcluster.gcp.clients import IMPERSONATION_LIFETIME_S
from sdcluster.gcp.resources import iam as sd_iam
from sdcluster.state import LocalBackend

from ..helpers import factory

PROJECT = "demo-proj"
ADMIN = f"serviceAccount:gke-admin@{PROJECT}.iam.gserviceaccount.com"
PARENT = f"projects/{PROJECT}/locations/us-central1-c"
CLUSTER = f"{PARENT}/clusters/sd-cluster"


def test_a_library_apply_takes_the_state_lock(setup: Any) -> None:
    emu, ws = setup()
    p = sdcluster.plan(ws)  # a notebook cell; then a terminal starts an apply...
    elsewhere = LocalBackend(ws.backend.path)  # another run's handle on the same state
    with elsewhere.lock("apply"):
        emu.log.clear()
        with pytest.raises(StateLocked):
            sdcluster.apply(p)  # ...so applying the plan in the notebook must wait its turn
        with pytest.raises(StateLocked):
            sdcluster.apply(ws)
        assert emu.log.mutating() == []


def test_the_state_records_each_create_before_its_call_and_after_it(setup: Any) -> None:
    _emu, ws = setup()
    seen: dict[str, list[tuple[str, bool]]] = {}
    on_disk = LocalBackend(ws.backend.path)

    def listener(event: Event) -> None:
        if event.kind not in ("start", "done"):
            return
        state = on_disk.read()
        record = state.resources.get(event.address) if state else None
        seen.setdefault(event.address, []).append((event.kind, record is not None and not record.pending))
        if event.kind == "start":
            assert record is not None and record.pending, f"{event.address} started with no pending record"

    sdcluster.apply(sdcluster.plan(ws), listener=listener)
    assert seen and all(marks == [("start", False), ("done", True)] for marks in seen.values()), seen


def test_the_cluster_is_created_by_gke_admin_and_denials_are_retried_while_bindings_propagate(
    setup: Any,
) -> None:
    emu, ws = setup()
    sdcluster.apply(ws)
    # Someone removes gke-admin's container.admin and deletes the cluster: the next apply grants the
    # role again and creates the cluster while that fresh binding still propagates.
    rm = factory(emu).projects()
    policy = rm.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"))
    sd_iam.remove_member(policy, "roles/container.admin", ADMIN)
    rm.set_iam_policy(
        request=iam_policy_pb2.SetIamPolicyRequest(resource=f"projects/{PROJECT}", policy=policy)
    )
    gke = factory(emu).cluster_manager()
    gke.delete_cluster(name=CLUSTER)
    retry.until(
        lambda: None if gke.list_clusters(parent=PARENT).clusters else True, timeout_s=30, what="deletion"
    )
    emu.world.knobs.iam_propagation_s = 1.5
    emu.log.clear()
    sdcluster.apply(ws)
    calls = [(e.code, e.caller) for e in emu.log.entries() if e.method == "CreateCluster"]
    assert calls[0] == ("PERMISSION_DENIED", ADMIN)  # denied while container.admin propagated...
    assert calls[-1] == ("OK", ADMIN)  # ...retried, and made by gke-admin, not by the user
    assert {caller for _, caller in calls} == {ADMIN}


def test_impersonated_credentials_have_the_configured_lifetime(setup: Any) -> None:
    _, ws = setup()
    sdcluster.apply(ws)
    creds = ws.stack.context(None).admin_credentials()
    left = (creds.expiry.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()
    assert IMPERSONATION_LIFETIME_S - 120 < left <= IMPERSONATION_LIFETIME_S, left


def test_a_kubernetes_api_refusing_connections_while_it_restarts_is_waited_out(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(ws)
    hub = emu.world.kube
    record = emu.world.data["kube"][CLUSTER]
    hub._shutdown(CLUSTER)  # the control plane restarts: connections are refused for a moment

    def back() -> None:
        with emu.world.lock:
            hub._serve(CLUSTER, record)  # same endpoint as before

    timer = threading.Timer(1.0, back)
    timer.start()
    try:
        p = sdcluster.plan(ws)
    finally:
        timer.join()
    assert not p.has_changes, [c.reason for c in p.changes if c.mutating]
