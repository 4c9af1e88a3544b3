"""Workflows: DAG definitions (JSON or YAML) and their runs with each step's status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from zhongshu.contracts.definitions import StepDefinition, WorkflowDefinition
from zhongshu.contracts.validation import workflow_problems
from zhongshu.gateway.models.common import ApiModel, CallbackTarget, ChatTarget, DefinitionId, Page

StepKind = Literal["collect", "infer", "notify"]


class Step(ApiModel):
    """One step. `collect`: `config.url` (GET, or `config.method` + `config.body`); `infer`:
    `config.prompt` with `{{steps.<id>.<field>}}` and `{{run.<input>}}`; `notify`:
    `config.targets` (`{app, chat}` or `{url}`) and `config.text`. Steps with the same `needs`
    run in parallel; a step that needs several is a join."""

    id: DefinitionId
    kind: StepKind
    needs: list[DefinitionId] = Field(default=[], max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0, le=20)
    timeout_s: float = Field(default=60.0, gt=0, le=86_400)


class WorkflowBody(ApiModel):
    """A workflow's definition (without its id, which the path names)."""

    description: str = Field(default="", max_length=2000)
    steps: list[Step] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _is_runnable(self) -> WorkflowBody:
        """The check the task engine runs too (graph, step configs, placeholders), so a
        workflow the API accepts is one the engine can run."""
        definition = WorkflowDefinition(
            id="w",
            tenant="t",
            steps=tuple(
                StepDefinition(
                    id=s.id,
                    kind=s.kind,
                    needs=tuple(s.needs),
                    config=s.config,
                    retries=s.retries,
                    timeout_s=s.timeout_s,
                )
                for s in self.steps
            ),
        )
        found = workflow_problems(definition)
        if found:
            raise ValueError("; ".join(found))
        return self


class WorkflowCreate(WorkflowBody):
    """A new workflow."""

    id: DefinitionId


class StepView(BaseModel):
    id: str
    kind: str
    needs: list[str] = []
    config: dict[str, Any] = {}
    retries: int = 0
    timeout_s: float = 60.0


class Workflow(BaseModel):
    id: str
    description: str = ""
    steps: list[StepView]
    version: int = Field(description="the definition's revision; runs record the one they used")


class WorkflowList(BaseModel):
    items: list[Workflow]


class RunCreate(ApiModel):
    """Start a run of the workflow (a task whose id is the run id)."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    deliver_to: list[ChatTarget | CallbackTarget] = Field(default=[], max_length=16)
    version: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class StepRun(BaseModel):
    step: str
    status: str = Field(description="running, completed, failed or retrying")
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    reason: str | None = None
    output: dict[str, Any] | None = None


class Run(BaseModel):
    run_id: str
    workflow: str
    status: str = Field(description="queued, running, completed or failed")
    version: int | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    reason: str | None = None
    requested_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    steps: list[StepRun] | None = Field(
        default=None, description="each step's status and duration (single-run view only)"
    )


class RunPage(Page):
    items: list[Run]
