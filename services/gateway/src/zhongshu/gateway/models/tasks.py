"""A task as the API shows it: assembled from the hot tier (Redis, the freshest status), the warm
tier (PostgreSQL, the full record) or the request just accepted."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from zhongshu.gateway.models.common import ApiModel, Page, TargetView, WorkflowRefView

TaskState = Literal["queued", "running", "completed", "failed", "cancelled"]
TaskOrigin = Literal["chat", "api", "schedule", "event"]


class Task(ApiModel):
    """One task. Fields the answering tier does not hold are absent: the hot tier has the
    status and result, the warm tier everything."""

    task_id: str
    status: TaskState
    origin: str = ""
    requested_by: str = ""
    title: str = ""
    prompt: str | None = None
    command: str | None = None
    args: list[str] | None = None
    workflow: WorkflowRefView | None = None
    inputs: dict[str, Any] | None = None
    deliver_to: list[TargetView] | None = None
    schedule_id: str | None = None
    detail: str | None = Field(default=None, description="the step in progress or the reason")
    result_text: str | None = None
    result_data: dict[str, Any] | None = None
    error_code: str | None = None
    attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    duration_ms: int | None = None
    source: Literal["accepted", "hot", "warm"] = Field(
        description="`accepted`: as just submitted; `hot`: Redis status; `warm`: PostgreSQL"
    )


class TaskPage(Page):
    items: list[Task]
