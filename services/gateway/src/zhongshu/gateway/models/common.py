"""Shapes the API shares between resources: ids, where results go, what a task asks for. These
are the HTTP contract (they generate the OpenAPI document); ``convert`` maps them to the bus's
msgspec contracts."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zhongshu.contracts import definitions
from zhongshu.contracts.definitions import ID_PATTERN
from zhongshu.contracts.validation import template_problem

DefinitionId = Annotated[
    str,
    Field(
        pattern=ID_PATTERN.pattern,
        description="lower-case letters, digits, `-` and `_`, starting with a letter or digit",
        examples=["daily-report"],
    ),
]
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:=+@-]{0,127}$"
TaskId = Annotated[
    str, Field(pattern=TASK_ID_PATTERN, examples=["0197a3c2e4b07d7e9f1a2b3c4d5e6f70"])
]

MAX_TEXT = 32_000


class ApiModel(BaseModel):
    """Unknown fields are refused: a typo (`deliverTo`) must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


class ChatTarget(ApiModel):
    """Post the result in a chat of one of the tenant's apps (an `apps:` entry of zhongshu.yaml)."""

    kind: Literal["chat"]
    app: str = Field(min_length=1, max_length=128)
    chat_id: str = Field(min_length=1, max_length=256)


class CallbackTarget(ApiModel):
    """POST the task's events to this URL, signed (see `POST /api/v1/task-callbacks/secret`)."""

    kind: Literal["callback"]
    url: str = Field(min_length=8, max_length=2048, examples=["https://example.com/hooks/tasks"])

    _url = field_validator("url")(check_http_url)


DeliveryTarget = Annotated[ChatTarget | CallbackTarget, Field(discriminator="kind")]


class WorkflowRef(ApiModel):
    """A workflow definition by id, optionally pinned to a version (its revision)."""

    name: DefinitionId
    version: str | None = Field(default=None, max_length=32, pattern=r"^[0-9]+$")


class TaskTemplate(ApiModel):
    """What to run: exactly one of `prompt`, `command` (with `args`) or `workflow` (with
    `inputs`), and where the result goes."""

    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    command: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="a chat command's name without the slash, e.g. `report`",
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default=[], max_length=64)
    workflow: WorkflowRef | None = None
    inputs: dict[str, Any] = Field(default={}, description="the workflow's run inputs")
    deliver_to: list[DeliveryTarget] = Field(default=[], max_length=16)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TaskTemplate:
        problem = template_problem(
            definitions.TaskTemplate(
                prompt=self.prompt,
                command=self.command,
                workflow=None if self.workflow is None else self.workflow.name,
            )
        )
        if problem:
            raise ValueError(problem)
        if self.args and self.command is None:
            raise ValueError("`args` go with a `command`")
        if self.inputs and self.workflow is None:
            raise ValueError("`inputs` go with a `workflow`")
        return self


class TaskCreate(TaskTemplate):
    """A task to run now."""

    timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class TargetView(BaseModel):
    """A delivery target as stored (newer kinds pass through)."""

    kind: str = ""
    app: str | None = None
    chat_id: str | None = None
    url: str | None = None


class WorkflowRefView(BaseModel):
    name: str
    version: str | None = None


class TaskTemplateView(BaseModel):
    """A stored task template (a schedule's or a trigger's)."""

    prompt: str | None = None
    command: str | None = None
    args: list[str] | None = None
    workflow: WorkflowRefView | None = None
    inputs: dict[str, Any] | None = None
    deliver_to: list[TargetView] | None = None
    timeout_s: float | None = None


class Page(ApiModel):
    """A page of a list; pass `next_cursor` as `cursor` for the next one (absent on the last)."""

    next_cursor: str | None = None
