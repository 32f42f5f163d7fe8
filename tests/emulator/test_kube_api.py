"""The parts of the emulated Kubernetes API that kubectl relies on without showing them: watch
replay and expiry, watch-list's initial-events bookmark, DeleteOptions in the body, server-side
Tables and list paging; driven with the official ``kubernetes`` client (kubectl itself in
tests/kubectl)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.rest import ApiException

from .kube_helpers import KEY, POOL, api_client, status_of, wait_for


@pytest.fixture
def core(emu: Any) -> k8s.CoreV1Api:
    endpoint, ca_pem = emu.world.kube.start_cluster(KEY, [POOL])
    return k8s.CoreV1Api(api_client(emu, endpoint, ca_pem))


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {"k": "v"}}


def get(
    core: k8s.CoreV1Api, path: str, query: list[tuple[str, str]], accept: str = "application/json"
) -> bytes:
    """The raw body of a GET (a stream is read until the server ends it)."""
    api = core.api_client
    method, url, headers, body, _ = api.param_serialize(
        "GET", path, query_params=query, header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    return bytes(response.read())


def test_a_watch_replays_what_came_after_its_version(
    core: k8s.CoreV1Api,
) -> None:
    listed = core.list_namespaced_config_map("default")
    since = listed.metadata.resource_version
    core.create_namespaced_config_map("default", configmap("first", a="1"))
    core.patch_namespaced_config_map("first", "default", {"data": {"a": "2"}})
    core.delete_namespaced_config_map("first", "default")
    events = [
        (e["type"], e["object"].metadata.name, (e["object"].data or {}).get("a"))
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=since,
            field_selector="metadata.name=first",  # the root CA publisher may write meanwhile
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "first", "1"), ("MODIFIED", "first", "2"), ("DELETED", "first", "2")]


def test_a_watch_from_before_a_restart_of_the_emulator_is_410_expired(tmp_path: Any) -> None:
    from sdcluster.emulator import Emulator

    state = str(tmp_path / "state.json")
    with Emulator(state_file=state) as first:
        endpoint, ca_pem = first.world.kube.start_cluster(KEY, [POOL])
        core = k8s.CoreV1Api(api_client(first, endpoint, ca_pem))
        since = core.list_namespaced_config_map("default").metadata.resource_version
    with Emulator(state_file=state) as second:
        core = k8s.CoreV1Api(api_client(second, second.world.kube.endpoint_of(KEY), ca_pem))
        core.create_namespaced_config_map("default", configmap("after"))  # history starts after this
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map(
                "default", watch=True, resource_version=since, _preload_content=False
            )
        assert err.value.status == 410 and status_of(err.value)["reason"] == "Expired"
        assert status_of(err.value)["message"].startswith(f"too old resource version: {since} (")


def test_watch_list_sends_the_objects_then_the_initial_events_end_bookmark(core: k8s.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("seen", a="1"))
    query = [
        ("watch", "true"),
        ("sendInitialEvents", "true"),
        ("resourceVersionMatch", "NotOlderThan"),
        ("allowWatchBookmarks", "true"),
        ("fieldSelector", "metadata.name=seen"),
        ("timeoutSeconds", "1"),
    ]
    raw = get(core, "/api/v1/namespaces/default/configmaps", query)
    events = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "seen"
    bookmark = events[1]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["resourceVersion"]) >= int(events[0]["object"]["metadata"]["resourceVersion"])


def test_delete_options_come_from_the_body_so_a_dry_run_there_deletes_nothing(core: k8s.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("kept", a="1"))
    shown = core.delete_namespaced_config_map(
        "kept", "default", body=k8s.V1DeleteOptions(dry_run=["All"], propagation_policy="Background")
    )
    # what a real delete answers (the client leaves a Status as a dict)
    assert shown["status"] == "Success" and shown["details"]["name"] == "kept"
    assert core.read_namespaced_config_map("kept", "default").data == {"a": "1"}
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("kept", "default", body=k8s.V1DeleteOptions(dry_run=["Some"]))
    assert err.value.status == 400 and 'dryRun: Unsupported value: "Some"' in status_of(err.value)["message"]
    core.delete_namespaced_config_map("kept", "default", body=k8s.V1DeleteOptions())
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("kept", "default")
    assert gone.value.status == 404


def test_tables_carry_the_printers_columns_and_lists_page_through_continue(core: k8s.CoreV1Api) -> None:
    for i in range(3):
        core.create_namespaced_config_map("default", configmap(f"page-{i}", a="1", b="2"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    body = json.loads(get(core, "/api/v1/namespaces/default/configmaps", [], accept))
    assert body["kind"] == "Table" and [c["name"] for c in body["columnDefinitions"]] == [
        "Name",
        "Data",
        "Age",
    ]
    rows = {r["cells"][0]: r for r in body["rows"]}
    assert rows["page-0"]["cells"][1] == 2 and rows["page-0"]["object"]["kind"] == "PartialObjectMetadata"
    first = core.list_namespaced_config_map("default", limit=2)
    assert len(first.items) == 2 and first.metadata.remaining_item_count >= 1
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    names = [c.metadata.name for c in first.items + rest.items]
    assert names == sorted(names) and {"page-0", "page-1", "page-2"} <= set(names)
    assert rest.metadata._continue is None
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=1, _continue="not-a-token")
    assert err.value.status == 400 and "continue key is not valid" in status_of(err.value)["message"]


def test_secrets_take_string_data_into_base64_data_and_refuse_data_that_is_not_base64(
    core: k8s.CoreV1Api,
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token"},
        "stringData": {"key": "s3cret"},
    }
    created = core.create_namespaced_secret("default", body)
    assert created.type == "Opaque" and created.data == {"key": base64.b64encode(b"s3cret").decode()}
    assert created.string_data is None
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(
            "default",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"k": "!!"}},
        )
    assert err.value.status == 400 and "illegal base64 data" in status_of(err.value)["message"]


def test_the_root_ca_publisher_puts_back_a_deleted_or_changed_kube_root_ca(
    core: k8s.CoreV1Api, emu: Any
) -> None:
    ca = emu.world.data["kube"][KEY]["ca_cert"]

    def published() -> bool:
        try:
            return bool(
                core.read_namespaced_config_map("kube-root-ca.crt", "kube-public").data == {"ca.crt": ca}
            )
        except ApiException:
            return False

    assert wait_for(published)
    core.patch_namespaced_config_map("kube-root-ca.crt", "kube-public", {"data": {"ca.crt": "tampered"}})
    assert wait_for(published)
    core.delete_namespaced_config_map("kube-root-ca.crt", "kube-public")
    assert wait_for(published)


def test_delete_collection_deletes_what_the_selector_selects(core: k8s.CoreV1Api) -> None:
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        body = configmap(name)
        body["metadata"]["labels"] = {"tier": tier}
        core.create_namespaced_config_map("default", body)
    core.delete_collection_namespaced_config_map("default", label_selector="tier=web")
    left = {c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="tier").items}
    assert left == {"c"}
