"""The model version as a resource of the plan: ``serving.model_dir`` (a local SavedModel directory)
published under the model path, so one apply goes from nothing to a served model.

It depends only on the bucket: the executor uploads it while IAM propagates and GKE creates the
cluster, and the Deployment depends on it, so its rollout (which waits until TF Serving answers, i.e.
the version is AVAILABLE) starts once the version is published. The bytes go through
``gcp.upload.upload_model`` (staged, then published atomically, ``saved_model.pb`` last), the same
code as ``sdcluster upload-model``; which version follows its rule (the newest one when it already
holds exactly these files, else the next).

- ``read``: one listing of the model path; the newest version's record (number, file count, bytes,
  ``digest`` of its objects' names, sizes and CRC32Cs) and whether it holds the local files (sizes,
  then CRC32Cs of the files whose size matches);
- plan: ``model version 1: 1.9 GiB in 24 files`` (create), ``model version 1 unchanged (CRC32C
  match)``, or a new version when the directory differs from the newest one (update);
- state: the version, its digest, file count and bytes, and the directory;
- destroy: the files are left to the bucket's own rules (kept with the bucket by default; deleted
  with it by ``destroy --delete-bucket --force``): the record is forgotten, nothing is deleted.

Example::

    cfg = Config.build(project="p", user="user:me@example.com", serving={"model_dir": "model/"})
    ModelVersion(cfg, ("storage.bucket.p-bucket",)).address
    # 'storage.model_version.p-bucket/stable_diffusion_model'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...engine import Action, AttrDiff, Change, Resource
from ...errors import NotFound
from ...state import ResourceState
from ..context import GcpContext
from ..upload import (
    LocalFile,
    Survey,
    UploadProgress,
    saved_model_files,
    size_text,
    split_model_path,
    survey,
    upload_model,
    version_record,
)

if TYPE_CHECKING:
    from ...config import Config

REPORT_INTERVAL_S = 1.0  # progress reports while bytes flow (phase changes are always reported)


class ModelVersion(Resource[GcpContext]):
    type = "storage.model_version"

    def __init__(self, cfg: Config, deps: tuple[str, ...]) -> None:
        bucket, base = split_model_path(cfg.model_path)
        super().__init__(f"{self.type}.{bucket}/{base}", {}, deps)
        self.cfg = cfg
        self.directory = cfg.model_directory
        self.retain_on_destroy = (
            f"the model files under {cfg.model_path}/ are left to the bucket: kept with it (the "
            "default), deleted with it by sdcluster destroy --delete-bucket --force"
        )
        self.forget_on_destroy = True
        self._files: list[LocalFile] | None = None
        self._survey: Survey | None = None

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> ModelVersion:
        return cls(provider.config, tuple(record.dependencies))

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return f"{self.cfg.model_path.rstrip('/')}/{attributes.get('version', '')}/"

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return True  # the model path is this configuration's (a version upload-model published)

    def files(self) -> list[LocalFile]:
        if self._files is None:
            self._files = saved_model_files(self.directory)
        return self._files

    def desired(self) -> dict[str, Any]:
        files = self.files()
        return {"files": len(files), "bytes": sum(f.size for f in files), "directory": self.directory}

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        if not self.directory:  # rebuilt from the state only (destroy, or model_dir unset)
            return self._newest(ctx)
        try:
            seen = survey(self.cfg, self.files(), factory=ctx.factory)
        except NotFound:  # no bucket yet
            return None
        self._survey = seen
        return seen.record(seen.versions[-1]) if seen.versions else None

    def _newest(self, ctx: GcpContext) -> dict[str, Any] | None:
        from ..upload import versions_under

        bucket, base = split_model_path(self.cfg.model_path)
        try:
            versions = versions_under(ctx.factory.storage(self.cfg.project), bucket, base, self.cfg.project)
        except NotFound:
            return None
        return version_record(self.cfg, versions[-1], factory=ctx.factory) if versions else None

    def planned_version(self) -> int | None:
        """The version this plan publishes or keeps (once read), i.e. what TF Serving is to serve."""
        if not self.directory:
            return None
        return self._survey.version if self._survey is not None else 1

    def diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        seen = self._survey
        if observed is not None and seen is not None and seen.holds:
            return self.change(
                Action.NOOP,
                f"model version {seen.version} unchanged (CRC32C match with {self.directory})",
                before=dict(observed),
                after=dict(observed),
            )
        version = seen.version if seen is not None else 1
        after = {**desired, "version": version}
        what = f"model version {version}: {size_text(desired['bytes'])} in {desired['files']} files"
        if observed is None:
            return self.change(Action.CREATE, what, before=None, after=after)
        if observed.get("version") == version:
            why = f"completes version {version}, which holds other or fewer files"
        else:
            why = f"the directory differs from version {observed.get('version')}"
        diffs = [
            AttrDiff(k, observed.get(k), after[k])
            for k in ("version", "files", "bytes")
            if observed.get(k) != after[k]
        ]
        diffs.append(AttrDiff("digest", observed.get("digest"), "(known after apply)"))
        return self.change(Action.UPDATE, f"{what} ({why})", before=dict(observed), after=after, diffs=diffs)

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        result = upload_model(self.cfg, self.directory, factory=ctx.factory, progress=self._reporter(ctx))
        record = version_record(self.cfg, result.version, factory=ctx.factory) or {}
        return {**record, "directory": self.directory}

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        return self.create(ctx, change)

    def delete(self, ctx: GcpContext, change: Change) -> None:
        """Never planned (destroy forgets the record, see the module docstring)."""

    def _reporter(self, ctx: GcpContext) -> Any:
        last = [0.0]

        def report(p: UploadProgress) -> None:
            if p.file:  # one file sent or skipped: a line in verbose output
                ctx.detail(self.address, p.describe_file())
                return
            now = time.monotonic()
            if p.phase == "uploading" and now - last[0] < REPORT_INTERVAL_S:
                return
            last[0] = now
            ctx.report(self.address, p.describe())

        return report
