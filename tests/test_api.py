"""The curated public API and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import sdcluster

EXPECTED = {
    "Change",
    "Config",
    "Plan",
    "SdclusterError",
    "State",
    "Workspace",
    "__version__",
    "apply",
    "destroy",
    "load_plan",
    "pause",
    "resume",
    "plan",
    "save_plan",
    "status",
    "upload_model",
}


def test_all_is_curated_and_every_name_resolves() -> None:
    assert set(sdcluster.__all__) == EXPECTED
    for name in sdcluster.__all__:
        assert getattr(sdcluster, name) is not None
    assert callable(sdcluster.plan) and callable(sdcluster.apply) and callable(sdcluster.destroy)
    assert issubclass(sdcluster.SdclusterError, Exception)


def test_import_is_light() -> None:
    code = (
        "import sys, sdcluster\n"
        "cfg = sdcluster.Config.build(project='demo-proj', user='user:a@example.com')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google', 'kubernetes', 'grpc'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
