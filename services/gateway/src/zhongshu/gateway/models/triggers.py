"""Event triggers: a subject filter under `events.`, a JMESPath condition, a task template."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from zhongshu.contracts import validation
from zhongshu.gateway.models.common import ApiModel, DefinitionId, TaskTemplate, TaskTemplateView


class TriggerBody(ApiModel):
    """Create a task when an event on `subject` satisfies `condition` (JMESPath on the event's
    CloudEvents JSON; empty = every event). `{{event.<path>}}` in the prompt and in string
    inputs is replaced by the event's field."""

    subject: str = Field(min_length=3, max_length=256, examples=["events.iot.*"])
    condition: str = Field(default="", max_length=4000, examples=["data.temperature > `30`"])
    task: TaskTemplate
    enabled: bool = True

    @field_validator("subject")
    @classmethod
    def _under_events(cls, value: str) -> str:
        problem = validation.subject_filter_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("condition")
    @classmethod
    def _compiles(cls, value: str) -> str:
        problem = validation.condition_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("task")
    @classmethod
    def _latest_workflow(cls, value: TaskTemplate) -> TaskTemplate:
        if value.workflow is not None and value.workflow.version is not None:
            raise ValueError("a trigger runs a workflow's latest version: omit `version`")
        return value


class TriggerCreate(TriggerBody):
    id: DefinitionId


class Trigger(BaseModel):
    id: str
    subject: str
    condition: str = ""
    task: TaskTemplateView
    enabled: bool
    version: int


class TriggerList(BaseModel):
    items: list[Trigger]
