"""The hot tier's shared keys in Redis: what one service writes and another reads.

Task statuses are written by the agent (and refreshed by the projector) and read by the router's
`/status` and `/tasks` and by the gateway, so their keys and shape are a contract like a subject:

- `zhongshu:task:<tenant>:<task_id>`: JSON `TaskStatus`, expires after `HOT_TTL_S`.
- `zhongshu:tasks:<tenant>`: sorted set of task ids scored by last update (unix seconds), the
  index behind "recent tasks"; members whose status key expired are skipped by readers and
  trimmed by writers.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

HOT_TTL_S: Final = 7 * 24 * 3600
"""The hot tier keeps a task status for 7 days (R8); the warm tier keeps it for good."""
INDEX_MAX: Final = 1000
"""Writers trim each tenant's index to its newest entries."""

TaskState = Literal["queued", "running", "completed", "failed", "cancelled"]


def task_status_key(tenant: str, task_id: str) -> str:
    return f"zhongshu:task:{tenant}:{task_id}"


def task_index_key(tenant: str) -> str:
    return f"zhongshu:tasks:{tenant}"


class TaskStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One task's current state, as `/status` shows it."""

    task_id: str
    status: TaskState
    title: str = ""
    """What was asked, shortened."""
    detail: str = ""
    """The failure reason, or the step in progress."""
    origin: str = ""
    requested_by: str = ""
    updated_at: float = 0.0
    """Unix seconds."""
    result_text: str = ""
    """The answer, shortened, once completed."""
