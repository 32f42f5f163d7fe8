"""What a plan is made of: actions, attribute diffs, changes, the plan itself and progress events.

Pure data, no I/O. A ``Change`` says what apply will do to one resource (its ``Action``) and why; an
existing resource that the state does not record yet carries ``adopt=True`` (it is imported into the
state; "adopt" is a flag of the change, not an action of its own, because an adopted resource may
also need an update). An adopted resource that sdcluster did not make also carries ``conflict=True``:
apply refuses to take it over unless told to (``apply --adopt``; ``sdcluster import`` for one); in a
destroy plan, ``conflict`` marks something under our address that destroy leaves running. A
replacement says in which order it happens (``ReplaceOrder``).

Example::

    c = Change("test.thing.a", "test.thing", Action.CREATE, "test.thing a does not exist")
    c.mutating          # True
    Plan([c]).counts()  # {'import': 0, 'add': 1, 'change': 0, 'destroy': 0}
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import StalePlan, UsageError

if TYPE_CHECKING:
    from ..state import Backend
    from .resource import Context, Resource, Stack


# The reason a change gives when its resource could not be read for a cause apply fixes first
# (``Context.absent_because``, e.g. an API not enabled yet): it is planned as absent.
UNREADABLE = "not readable yet"


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NOOP = "noop"
    KEEP = "keep"  # retained on destroy: forgotten by the state, left running


MUTATING: frozenset[Action] = frozenset({Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE})


class ReplaceOrder(enum.StrEnum):
    """How a replacement runs. Delete first when the new thing would collide with the old one (a
    cluster of the same name); create first when both can coexist (a node pool with a new name), so
    the workload moves over before the old one goes."""

    DELETE_FIRST = "delete_first"
    CREATE_FIRST = "create_first"


@dataclass
class AttrDiff:
    path: str
    before: Any
    after: Any
    forces_replacement: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "forces_replacement": self.forces_replacement,
        }


@dataclass
class Change:
    address: str
    type: str
    action: Action
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diffs: list[AttrDiff] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # It exists but the state does not record it: apply records it (imports it) as ours.
    adopt: bool = False
    # ... and sdcluster did not make it (someone else's, with our name): apply refuses unless adopting.
    conflict: bool = False
    # Its id (what `sdcluster import ADDRESS ID` takes), for a change with something that exists.
    id: str = ""
    replace_order: ReplaceOrder = ReplaceOrder.DELETE_FIRST

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "action": str(self.action),
            "adopt": self.adopt,
            "conflict": self.conflict,
            "id": self.id,
            "replace_order": str(self.replace_order),
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "diffs": [d.to_dict() for d in self.diffs],
            "dependencies": list(self.dependencies),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        action = str(d["action"])
        adopt = bool(d.get("adopt", False))
        if action == "import":  # plans saved before adoption became a flag
            action, adopt = Action.NOOP, True
        return cls(
            address=str(d["address"]),
            type=str(d["type"]),
            action=Action(action),
            adopt=adopt,
            conflict=bool(d.get("conflict", False)),
            id=str(d.get("id", "")),
            replace_order=ReplaceOrder(d.get("replace_order", ReplaceOrder.DELETE_FIRST)),
            reason=str(d.get("reason", "")),
            before=d.get("before"),
            after=d.get("after"),
            diffs=[AttrDiff(**x) for x in d.get("diffs", [])],
            dependencies=list(d.get("dependencies", [])),
            warnings=list(d.get("warnings", [])),
        )


@dataclass
class Binding:
    """What an in-memory plan needs to be applied: where the state lives, the stack of resources it
    was made from, and the run context they receive. Saved plans are bound again on load."""

    backend: Backend
    stack: Stack[Any]
    context: Context


@dataclass
class Plan:
    """What apply would do. Renders as a terraform-style diff (``str(plan)``, Jupyter HTML)."""

    changes: list[Change]
    destroy: bool = False
    lineage: str | None = None  # of the state the plan was made from (None: no state yet)
    serial: int = 0
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the config the plan was made from
    # What it would cost while running, as the provider priced it (plain data; None: not estimated).
    cost: dict[str, Any] | None = None
    # Not serialized: what the library needs to apply an in-memory plan.
    resources: dict[str, Resource[Any]] = field(default_factory=dict, repr=False, compare=False)
    binding: Binding | None = field(default=None, repr=False, compare=False)

    FORMAT: ClassVar[str] = "sdcluster-plan/1"

    def bound(self) -> Binding:
        """The binding of an in-memory plan (UsageError for a plan read from a file without load_plan)."""
        if self.binding is None:
            raise UsageError(
                "this plan has no workspace", hint="load saved plans with sdcluster.load_plan(path)"
            )
        return self.binding

    @property
    def has_changes(self) -> bool:
        return any(c.mutating or c.adopt for c in self.changes)

    def counts(self) -> dict[str, int]:
        add = sum(1 for c in self.changes if c.action in (Action.CREATE, Action.REPLACE))
        change = sum(1 for c in self.changes if c.action is Action.UPDATE)
        destroy = sum(1 for c in self.changes if c.action in (Action.DELETE, Action.REPLACE))
        imported = sum(1 for c in self.changes if c.adopt)
        return {"import": imported, "add": add, "change": change, "destroy": destroy}

    def conflicts(self) -> list[Change]:
        """What exists under our addresses but was not made by sdcluster: in an apply plan, what
        apply refuses to adopt without ``adopt=True``; in a destroy plan, what destroy leaves running."""
        return [c for c in self.changes if c.conflict]

    def to_dict(self) -> dict[str, Any]:
        body = self._body()
        return {"format": self.FORMAT, "digest": digest(body), **body}

    def _body(self) -> dict[str, Any]:
        return {
            "destroy": self.destroy,
            "lineage": self.lineage,
            "serial": self.serial,
            "summary": self.counts(),
            "warnings": list(self.warnings),
            "config": self.config,
            "changes": [c.to_dict() for c in self.changes],
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        hint = "make a new one: sdcluster plan --out plan.json"
        if not isinstance(d, Mapping) or d.get("format") != cls.FORMAT:
            raise StalePlan("this file is not a plan saved by this sdcluster version", hint=hint)
        body = {k: v for k, v in d.items() if k not in ("format", "digest")}
        if d.get("digest") != digest(body):
            raise StalePlan(
                "the saved plan was modified after it was saved (its digest does not match)", hint=hint
            )
        try:
            return cls(
                changes=[Change.from_dict(c) for c in d["changes"]],
                destroy=bool(d.get("destroy", False)),
                lineage=d.get("lineage"),
                serial=int(d.get("serial", 0)),
                warnings=list(d.get("warnings", [])),
                config=dict(d.get("config") or {}),
                cost=d.get("cost"),
            )
        except KeyError as e:
            raise StalePlan(f"the saved plan is malformed: it has no {e.args[0]!r}", hint=hint) from e
        except (TypeError, ValueError) as e:
            raise StalePlan(f"the saved plan is malformed: {e}", hint=hint) from e

    def __str__(self) -> str:
        from .display import plan_text

        return plan_text(self)

    def _repr_html_(self) -> str:
        from .display import plan_html

        return plan_html(self)


def digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Event:
    # "detail": a progress line only verbose output shows (e.g. each file of an upload).
    kind: Literal["refresh", "start", "progress", "detail", "done", "failed"]
    address: str
    action: str = ""
    message: str = ""
    elapsed: float = 0.0


Listener = Callable[[Event], None]
