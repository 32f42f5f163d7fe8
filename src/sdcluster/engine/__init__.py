"""The engine: the resource contract, plans and changes, refresh + diff, apply/destroy scheduling.

It imports no Google or Kubernetes library and knows no concrete resource: providers (``gcp``)
implement ``Resource`` and ``Stack``. The life of an apply: ``plan_changes`` refreshes every
resource concurrently and diffs purely; ``execute`` runs the changes in dependency waves, writing the
state after each completed one.
"""

from __future__ import annotations

from .executor import execute
from .model import MUTATING, Action, AttrDiff, Binding, Change, Event, Listener, Plan, ReplaceOrder
from .planner import check_fresh, plan_changes
from .resource import Context, Resource, Stack, resource_class

__all__ = [
    "MUTATING",
    "Action",
    "AttrDiff",
    "Binding",
    "Change",
    "Context",
    "Event",
    "Listener",
    "Plan",
    "ReplaceOrder",
    "Resource",
    "Stack",
    "check_fresh",
    "execute",
    "plan_changes",
    "resource_class",
]
