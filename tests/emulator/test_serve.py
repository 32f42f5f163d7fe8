"""`sdcluster emulator serve` as a separate process, driven by a script that uses only the official
client libraries (examples/emulator_official_clients.py); its state file survives a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("sdcluster"))


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [EXE, "emulator", "serve", "--operation-s", "0.3", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("export SDCLUSTER_EMULATOR=127.0.0.1:"), line
    return proc, line.split("=", 1)[1]


def test_official_clients_script_against_a_served_emulator_and_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "emu.json"
    proc, address = serve("--iam-propagation-s", "1", "--state-file", str(state_file))
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "emulator_official_clients.py"), address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        text = out.stdout
        assert "service account: script-admin@demo-proj.iam.gserviceaccount.com" in text
        assert "denied attempt(s)" in text and "after 0 denied" not in text  # propagation was real
        assert "cluster: RUNNING 127.0.0.1:" in text
        assert "kubernetes nodes over TLS: ['gke-" in text
        assert "object: hello from the official clients" in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Restart from the state file: the account, the cluster and the object are still there.
    proc, address = serve("--state-file", str(state_file))
    try:
        check = (
            "import sys\n"
            "from sdcluster.gcp.clients import ClientFactory\n"
            "f = ClientFactory(user='user:demo@example.com', emulator=sys.argv[1])\n"
            "print(f.iam_admin().get_service_account(name='projects/demo-proj/serviceAccounts/script-admin@demo-proj.iam.gserviceaccount.com').email)\n"
            "print(f.cluster_manager().get_cluster(name='projects/demo-proj/locations/us-central1-c/clusters/script-cluster').status.name)\n"
            "print(f.storage('demo-proj').bucket('demo-proj-script').blob('hello.txt').download_as_bytes().decode())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", check, address], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split("\n")[:3] == [
            "script-admin@demo-proj.iam.gserviceaccount.com",
            "RUNNING",
            "hello from the official clients",
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_takes_zones_out_of_capacity_and_a_propagation_time() -> None:
    from sdcluster.gcp.clients import control_call

    proc, address = serve(
        "--stockout-zone", "us-east1-b", "--stockout-zone", "us-east1-c", "--service-enable-s", "2"
    )
    try:
        knobs = control_call(address, "SetKnobs", {})  # no change: answers the knobs in force
        assert knobs["stockout_zones"] == ["us-east1-b", "us-east1-c"] and knobs["service_enable_s"] == 2.0
        assert "container.googleapis.com" not in knobs["enabled_services"]  # a new project
    finally:
        proc.terminate()
        proc.wait(timeout=30)
