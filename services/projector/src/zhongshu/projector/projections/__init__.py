"""Read models, one module per source: each turns a stream message into typed changes (``plan``,
pure: no I/O, so it is tested without a broker) and writes them with guarded upserts (``apply``).

The rules every projection follows, so a replay from sequence 0 changes nothing:
- a row remembers the stream sequence that last changed it (``last_seq``) and an upsert applies
  only when its sequence is newer;
- rows keyed by the sequence itself (``task_events``, ``audit``) are inserted once
  (``ON CONFLICT DO NOTHING``);
- nothing written depends on the clock of the projector, only on the messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg

from zhongshu.projector.hot import HotStatus
from zhongshu.projector.records import Record

C = TypeVar("C")
T = TypeVar("T")


@dataclass
class Applied:
    """What a batch of changes did: rows written per table, and the task statuses to refresh in
    the hot tier (only for rows that changed)."""

    rows: Counter[str] = field(default_factory=Counter)
    statuses: list[HotStatus] = field(default_factory=list)

    def merge(self, other: Applied) -> None:
        self.rows.update(other.rows)
        self.statuses.extend(other.statuses)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class Projection(ABC, Generic[C]):
    """One stream's read models."""

    stream: ClassVar[str]
    """The source stream; also the key of its row in ``projection_offsets``."""
    durable: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]
    tables: ClassVar[tuple[str, ...]]
    """The tables it owns: a rebuild of this stream empties exactly these."""

    @abstractmethod
    def plan(self, record: Record) -> list[C]:
        """The changes one message asks for ([] when it means nothing here). Raises
        ``PermanentError`` for a message no retry can make readable."""

    @abstractmethod
    async def apply(self, conn: asyncpg.Connection, change: C, applied: Applied) -> None:
        """Write one change inside the caller's transaction."""

    async def apply_all(
        self, conn: asyncpg.Connection, changes: Sequence[C], applied: Applied
    ) -> None:
        """Write changes in order; projections with append-only rows override this to insert
        them in one statement."""
        for change in changes:
            await self.apply(conn, change, applied)


def written(status: str) -> int:
    """Rows a command touched, from its status tag (``INSERT 0 1``, ``UPDATE 2``)."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def rounds(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` cut into as few lists as possible, each holding a key at most once, in order:
    one ``INSERT … ON CONFLICT DO UPDATE`` cannot change a row twice, and a row's changes must
    apply in stream order."""
    out: list[list[T]] = []
    seen: dict[Hashable, int] = {}
    for item in items:
        k = key(item)
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(out):
            out.append([])
        out[n].append(item)
    return out


def all_projections() -> tuple[Projection[Any], ...]:
    """Every stream projection, in the order a full rebuild runs them."""
    from zhongshu.projector.projections.alerts import AlertsProjection
    from zhongshu.projector.projections.audit import AuditProjection
    from zhongshu.projector.projections.deliveries import DeliveriesProjection
    from zhongshu.projector.projections.schedules import SchedulesProjection
    from zhongshu.projector.projections.tasks import TasksProjection
    from zhongshu.projector.projections.workflows import WorkflowsProjection

    return (
        TasksProjection(),
        WorkflowsProjection(),
        DeliveriesProjection(),
        AuditProjection(),
        SchedulesProjection(),
        AlertsProjection(),
    )
