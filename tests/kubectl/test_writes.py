"""kubectl's writing verbs against the cluster ``sdcluster apply`` made: apply (client- and
server-side, with kubectl's default validation done by the server), diff, create -f, edit, patch,
label, annotate, delete (``--dry-run=server`` and ``--wait``), wait, scale, and rollout status /
history / undo / restart / pause / resume on sdcluster's own Deployment."""

from __future__ import annotations

import re
import textwrap

from .conftest import DEPLOYMENT, Kubectl, wait_until


def web(name: str = "web", spec: str = "", pod: str = "") -> str:
    """A small nginx Deployment; ``spec`` and ``pod`` are extra lines of its spec and pod spec."""
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
        spec:
          selector: {{matchLabels: {{app: {name}}}}}
          {spec}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              {pod}
              containers:
              - name: nginx
                image: nginx:1.27
                readinessProbe: {{httpGet: {{port: 80}}}}
        """
    )


def configmap(name: str, value: str, extra: str = "") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: {value}\n{extra}"


def test_apply_has_its_fields_validated_by_the_server(kubectl: Kubectl) -> None:
    # kubectl's default (--validate=strict) leaves validation to a server whose OpenAPI v3 lists
    # fieldValidation for the kind's PATCH: the error is the apiserver's strict decoding error.
    strict = kubectl.fails("apply", "-f", "-", stdin=web(spec="replicaz: 2"))
    assert (
        'Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be '
        in strict
    )
    assert 'strict decoding error: unknown field "spec.replicaz"' in strict
    server_side = kubectl.fails("apply", "--server-side", "-f", "-", stdin=web(spec="replicaz: 2"))
    assert (
        "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): "
        ".spec.replicaz: field not declared in schema"
    ) in server_side
    warned = kubectl.run("apply", "--validate=warn", "-f", "-", stdin=web(spec="replicaz: 2"))
    assert warned.returncode == 0 and warned.stdout.strip() == "deployment.apps/web created"
    assert 'Warning: unknown field "spec.replicaz"' in warned.stderr
    ignored = kubectl.run(
        "create", "--validate=false", "-f", "-", stdin=configmap("loose", "b", "extra: x\n")
    )
    assert ignored.stdout.strip() == "configmap/loose created" and "Warning" not in ignored.stderr
    stored = kubectl.json("get", "cm", "loose")
    assert "extra" not in stored and stored["data"] == {"a": "b"}


def test_the_server_fills_upstreams_defaults_and_drops_empty_maps(kubectl: Kubectl) -> None:
    probe = kubectl.json("get", "deploy", "web")["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"
    ]
    assert probe == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    empty = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: empty\n  annotations: {}\n  labels: {}\ndata: {}\n"
    assert kubectl("create", "-f", "-", stdin=empty).strip() == "configmap/empty created"
    stored = kubectl.json("get", "cm", "empty")
    assert "data" not in stored and not {"annotations", "labels"} & set(stored["metadata"])


def test_server_side_apply_then_diff_and_create(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=configmap("settings", "b"))
    assert applied.strip() == "configmap/settings serverside-applied"
    changed = kubectl.run("diff", "--server-side", "-f", "-", stdin=configmap("settings", "c"), ok=False)
    assert changed.returncode == 1, changed.stderr
    assert re.search(r"^-  a: b$", changed.stdout, re.M) and re.search(r"^\+  a: c$", changed.stdout, re.M)
    same = kubectl.run("diff", "--server-side", "-f", "-", stdin=configmap("settings", "b"), ok=False)
    assert same.returncode == 0 and same.stdout == ""
    exists = kubectl.fails("create", "-f", "-", stdin=configmap("settings", "b"))
    assert (
        'Error from server (AlreadyExists): error when creating "STDIN": configmaps "settings" already exists'
        in exists
    )


def test_edit_patch_label_and_annotate(kubectl: Kubectl) -> None:
    editor = kubectl.workdir / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^  a: b$/  a: edited/' \"$1\"\n")
    editor.chmod(0o755)
    edited = kubectl.run("edit", "cm", "settings", KUBE_EDITOR=str(editor))
    assert edited.stdout.strip() == "configmap/settings edited", edited.stderr
    assert (
        kubectl("patch", "cm", "settings", "-p", '{"data":{"b":"patched"}}').strip()
        == "configmap/settings patched"
    )
    assert kubectl("label", "cm", "settings", "tier=web").strip() == "configmap/settings labeled"
    assert kubectl("annotate", "cm", "settings", "owner=team").strip() == "configmap/settings annotated"
    cm = kubectl.json("get", "cm", "settings", "--show-managed-fields")
    assert cm["data"] == {"a": "edited", "b": "patched"}
    assert cm["metadata"]["labels"] == {"tier": "web"} and cm["metadata"]["annotations"] == {"owner": "team"}
    managers = {(m["manager"], m["operation"]) for m in cm["metadata"]["managedFields"]}
    assert {("kubectl", "Apply"), ("kubectl-edit", "Update"), ("kubectl-patch", "Update")} <= managers


def test_delete_dry_run_server_keeps_the_object_and_delete_waits_until_it_is_gone(kubectl: Kubectl) -> None:
    dry = kubectl("delete", "cm", "settings", "--dry-run=server")
    assert dry.strip() == 'configmap "settings" deleted from default namespace (server dry run)'
    assert kubectl("get", "cm", "settings", "-o", "name").strip() == "configmap/settings"
    gone = kubectl("delete", "cm", "settings", "--wait=true")
    assert gone.strip() == 'configmap "settings" deleted from default namespace'
    assert 'configmaps "settings" not found' in kubectl.fails("get", "cm", "settings")


def test_scale_and_wait_for_available(kubectl: Kubectl) -> None:
    assert kubectl("scale", "deploy/web", "--replicas=3").strip() == "deployment.apps/web scaled"
    waited = kubectl("wait", "--for=jsonpath={.status.readyReplicas}=3", "deploy/web", "--timeout=60s")
    assert waited.strip() == "deployment.apps/web condition met"
    available = kubectl("wait", "--for=condition=Available", "deploy/web", "--timeout=30s")
    assert available.strip() == "deployment.apps/web condition met"
    assert kubectl("get", "deploy", "web", "--no-headers").split()[:4] == ["web", "3/3", "3", "3"]


def test_a_service_account_name_is_checked(kubectl: Kubectl) -> None:
    invalid = kubectl.fails("apply", "-f", "-", stdin=web("badsa", pod="serviceAccountName: Not_A_Name"))
    assert 'spec.template.spec.serviceAccountName: Invalid value: "Not_A_Name"' in invalid
    kubectl("apply", "-f", "-", stdin=web("ghost", pod="serviceAccountName: ghost"))

    def refused() -> str:
        return kubectl(
            "get", "ev", "--field-selector", "reason=FailedCreate", "-o", "jsonpath={.items[*].message}"
        )

    assert 'error looking up service account default/ghost: serviceaccount "ghost" not found' in wait_until(
        refused
    )


def test_rollout_restart_status_history_undo_pause_and_resume(kubectl: Kubectl) -> None:
    target = f"deploy/{DEPLOYMENT}"
    kubectl("annotate", target, "kubernetes.io/change-cause=restart for issue 17")
    assert kubectl("rollout", "restart", target).strip() == f"deployment.apps/{DEPLOYMENT} restarted"
    status = kubectl("rollout", "status", target, "--timeout=60s")
    assert status.strip().endswith(f'deployment "{DEPLOYMENT}" successfully rolled out')
    assert kubectl("rollout", "undo", target).strip() == f"deployment.apps/{DEPLOYMENT} rolled back"
    kubectl("rollout", "status", target, "--timeout=60s")
    history = kubectl("rollout", "history", target).splitlines()[2:]
    # revision 1's template came back as 3; revision 2 keeps the cause it was made for
    assert [line.split()[0] for line in history if line.strip()] == ["2", "3"]
    assert re.fullmatch(r"2\s+restart for issue 17", history[0]), history

    assert kubectl("rollout", "pause", target).strip() == f"deployment.apps/{DEPLOYMENT} paused"
    kubectl("set", "env", target, "PAUSED_CHANGE=1")
    items = kubectl.json("get", "deploy,rs")["items"]
    deployment = next(o for o in items if o["kind"] == "Deployment" and o["metadata"]["name"] == DEPLOYMENT)
    progressing = [c for c in deployment["status"]["conditions"] if c["type"] == "Progressing"]
    assert (progressing[0]["status"], progressing[0]["reason"]) == ("Unknown", "DeploymentPaused")
    revisions = {
        o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for o in items
        if o["kind"] == "ReplicaSet" and o["metadata"]["name"].startswith(f"{DEPLOYMENT}-")
    }
    assert revisions == {"2", "3"}  # the change waits: no new ReplicaSet while paused
    assert kubectl("rollout", "resume", target).strip() == f"deployment.apps/{DEPLOYMENT} resumed"
    kubectl("rollout", "status", target, "--timeout=60s")
    assert re.search(r"PAUSED_CHANGE:\s+1\n", kubectl("rollout", "history", target, "--revision=4"))
