"""What every handler of the engine shares: its resources, and an outbox that publishes in the
input's tenant and correlation under deterministic ids."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import Event
from zhongshu.runtime import Delivery
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.taskengine.adapters.definitions import DefinitionStore
from zhongshu.taskengine.adapters.runlog import RunLog
from zhongshu.taskengine.adapters.trigger_table import TriggerTable
from zhongshu.taskengine.settings import TaskEngineSettings

SOURCE = "zhongshu/taskengine"


@dataclass(frozen=True)
class Engine:
    settings: TaskEngineSettings
    runlog: RunLog
    definitions: DefinitionStore
    triggers: TriggerTable
    config: ConfigSource
    http: httpx.AsyncClient


class Outbox:
    """``publish`` is pipelined: its PubAck is awaited with the rest before the input is acked.
    ``publish_now`` waits for the PubAck, for events that must be stored before what follows
    (a step's start before its work, a task's outcome before the run's)."""

    def __init__(self, delivery: Delivery, *, tenant: str, correlation_id: str | None) -> None:
        self.delivery = delivery
        self.tenant = tenant
        self.correlation_id = correlation_id

    def envelope(
        self, event: Event, msg_id: str, *, correlation_id: str | None = None
    ) -> wire.Envelope[Event]:
        return wire.make_envelope(
            event,
            id=msg_id,
            source=SOURCE,
            tenant=self.tenant,
            correlation_id=correlation_id or self.correlation_id,
        )

    async def publish(
        self, subject: str, event: Event, msg_id: str, *, correlation_id: str | None = None
    ) -> None:
        envelope = self.envelope(event, msg_id, correlation_id=correlation_id)
        await self.delivery.publish_envelope(subject, envelope)

    async def publish_now(self, subject: str, event: Event, msg_id: str) -> None:
        envelope = self.envelope(event, msg_id)
        await self.delivery.publisher.publish(subject, wire.encode(envelope), msg_id=msg_id)

    def run_subject(self, run_id: str) -> str:
        return subjects.workflow_run(self.tenant, run_id)

    def task_subject(self, task_id: str) -> str:
        return subjects.task_event(self.tenant, task_id)
