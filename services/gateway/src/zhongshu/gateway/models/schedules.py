"""Schedules: a cadence (cron in a time zone, or `@every`) and the task each firing creates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator, model_validator

from zhongshu.gateway.domain import cadence
from zhongshu.gateway.models.common import ApiModel, DefinitionId, TaskCreate, TaskTemplateView


class ScheduleBody(ApiModel):
    """When and what. `schedule` is a 5-field cron (`0 9 * * 1-5`), a 6-field cron with
    seconds first (nats-server's notation), `@hourly`, `@daily`, `@weekly`, `@monthly`,
    `@yearly`, or `@every <duration>` (`30s`, `5m`, `1h30m`; at least 1s). `time_zone` (IANA,
    e.g. `Asia/Shanghai`) applies to cron schedules; without it they run in UTC."""

    schedule: str = Field(min_length=2, max_length=200, examples=["0 9 * * 1-5", "@every 5m"])
    time_zone: str | None = Field(default=None, min_length=1, max_length=64)
    task: TaskCreate

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            cadence.zone(value)
        return value

    @model_validator(mode="after")
    def _valid_cadence(self) -> ScheduleBody:
        cadence.parse(self.schedule, self.time_zone)
        return self


class ScheduleCreate(ScheduleBody):
    id: DefinitionId


class Schedule(BaseModel):
    id: str
    schedule: str = Field(description="as nats-server reads it (`Nats-Schedule`)")
    time_zone: str | None = None
    task: TaskTemplateView | None = Field(
        default=None, description="what each firing asks for (a task template)"
    )
    next_fire_at: datetime | None = Field(
        default=None, description="the next firing, computed in the schedule's time zone"
    )
    created_at: datetime = Field(description="when this version was stored")
    version: int = Field(description="the schedule's stream sequence")


class ScheduleList(BaseModel):
    items: list[Schedule]
