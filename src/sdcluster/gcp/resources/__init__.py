"""The Google provider's resources, one module per kind. Importing this package registers every
resource class by its state type (``engine.resource_class``)."""

from __future__ import annotations

from . import gke, iam, serving, storage

__all__ = ["gke", "iam", "serving", "storage"]
