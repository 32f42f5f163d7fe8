"""A new project, as Google makes one: only the APIs enabled by default are on; an API just enabled
keeps answering SERVICE_DISABLED while the enabling propagates; the error carries Google's
``google.rpc.ErrorInfo`` in the gRPC status details. Through the official clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import service_usage_v1

from sdcluster.emulator.core import NEW_PROJECT_SERVICES

from ..helpers import factory

PROJECT = "demo-proj"
CLUSTERS = f"projects/{PROJECT}/locations/-"


def enabled(emu: Any) -> set[str]:
    su = factory(emu).service_usage()
    request = {"parent": f"projects/{PROJECT}", "filter": "state:ENABLED", "page_size": 200}
    return {s.config.name for s in su.list_services(request=request)}


def test_a_new_project_has_only_the_apis_google_enables_by_default(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(enabled_services=list(NEW_PROJECT_SERVICES))  # the emulator's default, said here
    assert enabled(emu) == set(NEW_PROJECT_SERVICES)
    assert {"storage.googleapis.com", "serviceusage.googleapis.com"} <= enabled(emu)
    with pytest.raises(gexc.PermissionDenied) as err:
        factory(emu).cluster_manager().list_clusters(parent=CLUSTERS)
    e = err.value
    number = emu.world.project(PROJECT)["number"]
    # Google's wording, and its ErrorInfo in the status details (google-api-core exposes it).
    assert e.message == (
        f"Kubernetes Engine API has not been used in project {number} before or it is disabled. Enable it "
        f"by visiting https://console.developers.google.com/apis/api/container.googleapis.com/overview?project="
        f"{number} then retry. If you enabled this API recently, wait a few minutes for the action to "
        "propagate to our systems and retry."
    )
    assert (e.reason, e.domain) == ("SERVICE_DISABLED", "googleapis.com")
    assert e.metadata["service"] == "container.googleapis.com"
    assert e.metadata["consumer"] == f"projects/{number}"


def test_the_default_project_is_a_new_one(make_emu: Callable[..., Any]) -> None:
    from sdcluster.emulator import Emulator

    with Emulator() as emu:  # no knob: what `sdcluster emulator serve` and the demo get
        assert enabled(emu) == set(NEW_PROJECT_SERVICES)
        for service in ("container", "compute", "iam", "iamcredentials", "cloudresourcemanager"):
            assert f"{service}.googleapis.com" not in enabled(emu)


def test_an_enabled_api_answers_once_the_enabling_has_propagated(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(enabled_services=list(NEW_PROJECT_SERVICES), service_enable_s=1.0)
    su = factory(emu).service_usage()
    name = f"projects/{PROJECT}/services/container.googleapis.com"
    su.enable_service(request={"name": name}).result(timeout=5)
    # Service Usage says ENABLED at once; the API itself does not serve the project yet.
    assert su.get_service(request={"name": name}).state == service_usage_v1.State.ENABLED
    gke = factory(emu).cluster_manager()
    with pytest.raises(gexc.PermissionDenied) as err:
        gke.list_clusters(parent=CLUSTERS)
    assert err.value.reason == "SERVICE_DISABLED"
    time.sleep(1.1)
    assert list(gke.list_clusters(parent=CLUSTERS).clusters) == []
