"""Concurrency: two applies on one state (exactly one proceeds, the other fails fast naming the
holder), and another admin editing the project IAM policy all through an apply (nothing is lost)."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.iam.v1 import iam_policy_pb2

import sdcluster
from sdcluster.gcp.resources import iam as sd_iam

from ..helpers import factory, with_apis
from .runs import KNOBS, RUN_TIMEOUT_S, SDCLUSTER, cli, environment, workspace
from .worldview import PROJECT, Reference, creates, differences, world_addresses, world_view

GATE_TIMEOUT_S = 60


class FirstMutationGate:
    """Holds the emulator's answer to the first successful mutating request until ``release()``.

    The process that made it is then certainly inside its apply, holding the state lock.
    """

    def __init__(self, emu: Any) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        log = emu.world.log
        add = log.add

        def gated_add(entry: Any) -> None:
            add(entry)
            if entry.mutating and entry.code == "OK" and not self.reached.is_set():
                self.reached.set()
                self._released.wait(GATE_TIMEOUT_S)

        log.add = gated_add

    def release(self) -> None:
        self._released.set()


def test_second_apply_on_the_same_state_fails_fast_naming_the_holder(
    make_emu: Any, tmp_path: Path, reference: Reference
) -> None:
    emu = make_emu(**KNOBS)
    env = environment(emu)
    assert cli(tmp_path, env, "init", "--project", PROJECT, "--user", "demo@example.com").returncode == 0
    gate = FirstMutationGate(emu)
    first = subprocess.Popen(
        [SDCLUSTER, "apply", "-y"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gate.reached.wait(RUN_TIMEOUT_S), "the first apply never got to its first change"
        second = cli(tmp_path, env, "apply", "-y")
    finally:
        gate.release()
    out, err = first.communicate(timeout=RUN_TIMEOUT_S)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert "Apply complete!" in out
    assert second.returncode == 1
    assert f"is locked by pid {first.pid} on host {socket.gethostname()} (apply)" in second.stderr
    assert "Hint:" in second.stderr and "force-unlock" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert "Apply complete!" not in second.stdout
    assert creates(emu) == reference.creates  # one apply's worth of creates: the second did nothing


class OtherAdmin:
    """Another admin adding members to roles/viewer on the project, as fast as IAM lets them.

    Their script is a correct read-modify-write: on a concurrent change (ABORTED) it redoes it.
    """

    ROLE = "roles/viewer"

    def __init__(self, emu: Any) -> None:
        self.client = factory(emu).projects()
        self.added: list[str] = []
        self.aborted = 0
        self.stop = threading.Event()
        self.first_write = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        resource = f"projects/{PROJECT}"
        while not self.stop.is_set():
            member = f"user:other-admin-{len(self.added)}@example.com"
            policy = self.client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
            sd_iam.add_member(policy, self.ROLE, member)
            try:
                self.client.set_iam_policy(
                    request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy)
                )
            except gexc.Aborted:
                self.aborted += 1
                continue
            self.added.append(member)
            self.first_write.set()

    def __enter__(self) -> OtherAdmin:
        self.thread.start()
        assert self.first_write.wait(GATE_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(GATE_TIMEOUT_S)


def test_project_policy_edited_during_apply_loses_no_member(
    make_emu: Any, tmp_path: Path, reference: Reference
) -> None:
    # The other admin edits the project's policy from the start: Resource Manager is on already.
    emu = make_emu(**KNOBS, enabled_services=with_apis("cloudresourcemanager.googleapis.com"))
    ws = workspace(emu, tmp_path / "state.json")
    with OtherAdmin(emu) as other:
        written_before = len(other.added)
        state = sdcluster.apply(ws)
        written_during = len(other.added) - written_before
    assert written_during > 0  # the other admin really wrote while we applied
    ours = [
        e for e in emu.log.entries() if e.method == "SetIamPolicy" and e.resource == f"projects/{PROJECT}"
    ]
    aborted = sum(1 for e in ours if e.code == "ABORTED")
    assert aborted > 0, "no concurrent change hit us: the race did not happen"

    view = world_view(emu)
    project_policy = view["policies"][f"projects/{PROJECT}"]
    assert project_policy.pop(OtherAdmin.ROLE) == sorted(other.added)  # every one of theirs survived
    expected = reference.applied["policies"][f"projects/{PROJECT}"]
    assert project_policy == expected, differences(expected, project_policy)  # and every one of ours
    assert set(state.resources) == world_addresses(view) == reference.applied_addresses
