"""The validated configuration model of sdcluster: ``sdcluster.toml`` + environment + overrides.

Sources, lowest precedence first (a later source wins key by key):

1. the TOML file (``sdcluster.toml`` in the working directory, or ``$SDCLUSTER_CONFIG``, or the
   ``path`` given); a missing file is fine only when ``project`` comes from a later source;
2. environment variables: ``SDCLUSTER_<FIELD>`` for top-level fields (``SDCLUSTER_PROJECT``,
   ``SDCLUSTER_REGION``, ``SDCLUSTER_USER``, ``SDCLUSTER_MANAGE_APIS``) and
   ``SDCLUSTER_<SECTION>__<FIELD>`` for the others (``SDCLUSTER_CLUSTER__ZONE``); ``SDCLUSTER_STATE``
   is an alias of ``SDCLUSTER_STATE__PATH``. Values are read by the field's type: strings verbatim;
   integers, and arrays/tables as TOML (``["10.0.0.0/8"]``; lists also as ``a,b``); booleans as
   true/false/1/0/yes/no/on/off. Empty values count as unset. ``SDCLUSTER_EMULATOR`` and
   ``SDCLUSTER_CONFIG`` belong to other parts of sdcluster and are not fields. Any other
   ``SDCLUSTER_<SECTION>__<NAME>`` that is not a field is an error, and so is a top-level name close
   to a field's (``SDCLUSTER_PROJCT``): typos are never ignored;
3. ``overrides``: dotted keys (``{"cluster.zone": "us-central1-a"}``), what CLI flags become; ``None``
   values are skipped so the CLI can pass every flag.

Every problem is reported at once, one per line, naming the file, the field path and the rule broken,
as :class:`sdcluster.errors.ConfigError` whose ``hint`` says how to fix it. Unknown keys are errors,
with a suggestion when one is close (``cluster.machine_tpye`` -> ``machine_type``).

Two fields are templates: ``bucket.name`` (``{project}``) and ``serving.model_path`` (``{project}``,
``{bucket}``). The model keeps them as written, so a rendered file round-trips; the resolved values
are properties (:attr:`Config.bucket_name`, :attr:`Config.model_path`).

Library callers (notebooks) use :meth:`Config.build`, which validates the same way and raises
``ConfigError``; ``Config(project=..., user=...)`` also works but raises pydantic's
``ValidationError``.

Example::

    cfg = Config.load("sdcluster.toml", overrides={"cluster.zone": "us-central1-a"})
    cfg.cluster_key   # 'projects/demo-proj/locations/us-central1-a/clusters/sd-cluster'
"""

from __future__ import annotations

from .files import render_toml, write_init
from .model import BucketConfig, ClusterConfig, Config, IamConfig, ServingConfig, StateConfig
from .quantity import quantity_value
from .rules import normalize_member
from .sources import DEFAULT_CONFIG_FILE, ENV_PREFIX

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "BucketConfig",
    "ClusterConfig",
    "Config",
    "IamConfig",
    "ServingConfig",
    "StateConfig",
    "normalize_member",
    "quantity_value",
    "render_toml",
    "write_init",
]
