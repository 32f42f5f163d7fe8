"""kubectl's reading verbs against the cluster ``sdcluster apply`` made: get (server-side Table
columns, short names, ``all``, paging, field selectors, watch), describe, logs (and ``-f``),
explain, events, auth can-i, and the clean answers for what the emulator does not do."""

from __future__ import annotations

import base64
import re

import yaml

from sdcluster.ui.demo import make_demo_model

from .conftest import DEPLOYMENT, Kubectl, wait_until


def _rows(text: str) -> list[list[str]]:
    """A table's rows split on runs of two or more spaces (kubectl's tabwriter)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_get_prints_the_servers_columns_for_short_names_and_all(kubectl: Kubectl) -> None:
    # upload-model returned once TF Serving served the model: the pod is ready.
    wide = _rows(kubectl("get", "deploy,svc,po", "-o", "wide"))
    assert wide[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][:4] == [f"deployment.apps/{DEPLOYMENT}", "1/1", "1", "1"]
    assert wide[1][5:] == ["tf-serving", "tensorflow/serving:2.11.0", "app=stable-diffusion"]
    service = next(r for r in wide if r[0] == f"service/{DEPLOYMENT}")
    assert service[1] == "LoadBalancer" and re.fullmatch(r"127\.0\.\d+\.\d+", service[3])
    assert re.fullmatch(r"8501:\d+/TCP,8500:\d+/TCP", service[4]) and service[-1] == "app=stable-diffusion"
    pod_header = next(r for r in wide if r[0] == "NAME" and "RESTARTS" in r)
    assert pod_header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "NODE" in pod_header
    pod = next(r for r in wide if r[0].startswith(f"pod/{DEPLOYMENT}-"))
    assert pod[1:3] == ["1/1", "Running"] and pod[6].startswith("gke-sd-cluster-sd-node-pool-")

    everything = kubectl("get", "all")
    for prefix in ("pod/", "service/", "deployment.apps/", "replicaset.apps/"):
        assert f"\n{prefix}{DEPLOYMENT}" in everything, everything
    nodes = _rows(kubectl("get", "no"))
    assert nodes[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1][1:3] == ["Ready", "<none>"] and nodes[1][4] == "v1.37.0-gke.1000"


def test_lists_page_through_continue_and_unsupported_field_selectors_are_400(kubectl: Kubectl) -> None:
    paged = kubectl.run("get", "cm", "-A", "--chunk-size=1", "-v=6")
    rows = _rows(paged.stdout)
    assert rows[0] == ["NAMESPACE", "NAME", "DATA", "AGE"]
    # The root CA publisher's ConfigMap in every namespace, and sdcluster's own.
    roots = {r[0] for r in rows[1:] if r[1] == "kube-root-ca.crt"}
    assert roots == {"default", "kube-node-lease", "kube-public", "kube-system"}
    assert next(r for r in rows if r[1] == "tfserving-configs")[:3] == ["default", "tfserving-configs", "2"]
    assert len(re.findall(r"configmaps\?continue=[^&\s]+&limit=1", paged.stderr)) == len(rows) - 2

    running = kubectl("get", "pods", "--field-selector", "status.phase=Running", "-o", "name")
    assert running.startswith(f"pod/{DEPLOYMENT}-")
    error = kubectl.fails("get", "pods", "--field-selector", "spec.foo=bar")
    assert "Error from server (BadRequest)" in error and "field label not supported: spec.foo" in error


def test_describe_shows_the_deployments_replicasets_the_services_endpoints_and_pod_events(
    kubectl: Kubectl,
) -> None:
    deploy = kubectl("describe", f"deploy/{DEPLOYMENT}")
    new_rs = re.search(r"NewReplicaSet:\s+(stable-diffusion-\w+) \(1/1 replicas created\)", deploy)
    assert new_rs, deploy
    assert re.search(r"OldReplicaSets:\s+<none>", deploy)
    assert re.search(rf"Normal\s+ScalingReplicaSet\s+.*Scaled up replica set {new_rs[1]} from 0 to 1", deploy)

    pod = kubectl("describe", "pod", "-l", "app=stable-diffusion")
    assert re.search(r"Status:\s+Running", pod) and re.search(r"Ready\s+True", pod)
    for reason in ("Scheduled", "Pulling", "Pulled", "Created", "Started"):
        assert re.search(rf"Normal\s+{reason}\s", pod), (reason, pod)
    pod_ip = re.search(r"^IP:\s+(\S+)$", pod, re.M)
    assert pod_ip, pod
    service = kubectl("describe", "svc", DEPLOYMENT)
    assert re.search(rf"Endpoints:\s+{re.escape(pod_ip[1])}:8501\n", service), service
    assert re.search(r"LoadBalancer Ingress:\s+127\.0\.\d+\.\d+ \(VIP\)", service)


def test_logs_of_the_deployment_and_follow_sees_a_new_version_load(kubectl: Kubectl) -> None:
    logs = kubectl("logs", f"deploy/{DEPLOYMENT}")
    assert "Successfully loaded servable version {name: stable-diffusion version: 1}" in logs
    assert "Exporting HTTP/REST API at:localhost:8501 ..." in logs

    # A second version, uploaded while the log is followed, shows up in the stream.
    with kubectl.start("logs", "-f", "--tail=1", f"deploy/{DEPLOYMENT}") as follow:
        first = follow.wait_for(lambda lines: len(lines) == 1)
        model = make_demo_model(kubectl.workdir / "model2", shards=1, shard_bytes=1024)
        kubectl.sdcluster("upload-model", str(model), "--version", "2", "--no-wait")
        version_2 = "Successfully loaded servable version {name: stable-diffusion version: 2}"
        seen = follow.wait_for(lambda lines: any(version_2 in line for line in lines))
    assert seen[0] == first[0] and len(seen) > 1  # the tail line, then what came after it


def test_explain_reads_the_openapi_v3_schemas(kubectl: Kubectl) -> None:
    text = kubectl("explain", "deployment.spec.strategy.rollingUpdate")
    assert "GROUP:      apps" in text and "KIND:       Deployment" in text and "VERSION:    v1" in text
    assert "FIELD: rollingUpdate <RollingUpdateDeployment>" in text
    # kubectl names an int-or-string by its schema's type (kubectl's explain template, typeGuess)
    assert re.search(
        r"FIELDS:\n  maxSurge\t<string>\n    The maximum number of pods that can be scheduled", text
    )
    assert "maxUnavailable\t<string>" in text


def test_events_for_the_deployment_and_get_events_columns(kubectl: Kubectl) -> None:
    events = _rows(kubectl("events", "--for", f"deployment/{DEPLOYMENT}"))
    assert events[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any(r[1:4] == ["Normal", "ScalingReplicaSet", f"Deployment/{DEPLOYMENT}"] for r in events[1:])
    listed = _rows(kubectl("get", "ev", "--field-selector", "reason=Scheduled"))
    assert listed[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert all(r[2] == "Scheduled" and r[3].startswith("pod/") for r in listed[1:]) and len(listed) > 1


def test_auth_can_i_answers_from_iam(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "deployments").strip() == "yes"
    assert kubectl("auth", "can-i", "get", "pods", "--subresource=log").strip() == "yes"
    viewer = "user:viewer@example.com"
    world = kubectl.emu.world
    policy = world.policy("projects/demo-proj")
    world.set_policy(
        "projects/demo-proj", [*policy["bindings"], {"role": "roles/viewer", "members": [viewer]}], b""
    )
    denied = kubectl.run("auth", "can-i", "create", "deployments", ok=False, member=viewer)
    assert denied.returncode == 1 and denied.stdout.strip() == "no"


def test_get_watch_prints_the_pod_a_deletion_brings(kubectl: Kubectl) -> None:
    old = kubectl("get", "pods", "-l", "app=stable-diffusion", "-o", "jsonpath={.items[0].metadata.name}")
    with kubectl.start("get", "pods", "-w", "--output-watch-events") as watch:
        first = watch.wait_for(lambda lines: len(lines) >= 2)
        assert first[0].split()[:4] == ["EVENT", "NAME", "READY", "STATUS"]
        assert first[1].split()[:2] == ["ADDED", old]
        kubectl("delete", "pod", old, "--wait=false")

        def replaced(lines: list[str]) -> bool:
            events = [line.split()[:2] for line in lines]
            return ["DELETED", old] in events and any(e[0] == "ADDED" and e[1] != old for e in events)

        watch.wait_for(replaced)


def test_what_the_emulator_does_not_do_answers_a_clean_status(kubectl: Kubectl) -> None:
    assert "exec is not supported by the sdcluster emulator" in kubectl.fails(
        "exec", f"deploy/{DEPLOYMENT}", "--", "ls"
    )
    assert "port-forward is not supported by the sdcluster emulator" in kubectl.fails(
        "port-forward", f"svc/{DEPLOYMENT}", "18599:8501"
    )
    assert kubectl.fails("top", "pods").strip() == "error: Metrics API not available"
    protobuf = kubectl.fails("create", "configmap", "made-by-create", "--from-literal=a=b")
    assert "does not decode Kubernetes protobuf" in protobuf
    assert "--dry-run=client -o yaml | kubectl apply -f -" in protobuf
    # The route it names works.
    manifest = kubectl(
        "create", "configmap", "made-by-create", "--from-literal=a=b", "--dry-run=client", "-o", "yaml"
    )
    assert kubectl("apply", "-f", "-", stdin=manifest).strip() == "configmap/made-by-create created"


def test_every_namespace_has_the_root_ca_of_the_cluster(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n")
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()

    def published() -> str:
        return kubectl.run(
            "get", "cm", "kube-root-ca.crt", "-n", "team", "-o", "jsonpath={.data.ca\\.crt}", ok=False
        ).stdout

    assert wait_until(published, timeout=10) == ca
