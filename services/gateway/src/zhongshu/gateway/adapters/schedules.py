"""Schedules as JetStream keeps them (ADR 0002): one message on `schedule.<tenant>.<id>` in
SCHEDULES whose `Nats-Schedule*` headers tell the server when to copy its body (a
`TaskRequested` envelope) to `schedule.<tenant>.<id>.fired`, which TASKS sources as
`task.requested.<tenant>`. No scheduler of ours runs: the stream is the schedule, so it survives
every restart. Writes are conditional on the subject's last sequence, so two clients cannot
overwrite each other unknowingly."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.gateway.adapters import Unavailable

STREAM = streams.SCHEDULES.name
_WRONG_LAST_SEQUENCE = (10071, 10164)


class ScheduleConflict(Exception):
    """The subject changed since it was read (or exists, when creating)."""


class ScheduleRefused(Exception):
    """The server refused the schedule; the text is its reason."""


@dataclass(frozen=True)
class StoredSchedule:
    schedule_id: str
    spec: str
    """The `Nats-Schedule` value as stored."""
    time_zone: str | None
    body: bytes
    seq: int
    stored_at: datetime


class ScheduleStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def get(self, tenant: str, schedule_id: str) -> StoredSchedule | None:
        subject = subjects.schedule(tenant, schedule_id)
        try:
            msg = await self._js.get_last_msg(STREAM, subject)
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) cannot read schedules") from exc
        headers = msg.headers or {}
        spec = headers.get(H.SCHEDULE)
        if not spec:  # not a schedule (a one-shot that has fired, or foreign data)
            return None
        return StoredSchedule(
            schedule_id=schedule_id,
            spec=spec,
            time_zone=headers.get(H.SCHEDULE_TIME_ZONE) or None,
            body=msg.data or b"",
            seq=msg.seq or 0,
            stored_at=msg.time or datetime.now(UTC),
        )

    async def list(self, tenant: str) -> list[StoredSchedule]:
        """Every schedule of the tenant: the last message of each subject it has."""
        try:
            info = await self._js.stream_info(
                STREAM, subjects_filter=subjects.schedules_for(tenant)
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) cannot list schedules") from exc
        ids = sorted(s.rsplit(".", 1)[1] for s in (info.state.subjects or {}))
        found = await asyncio.gather(*(self.get(tenant, i) for i in ids))
        return [s for s in found if s is not None]

    async def put(
        self,
        tenant: str,
        schedule_id: str,
        *,
        spec: str,
        time_zone: str | None,
        body: bytes,
        msg_id: str,
        expected_seq: int,
    ) -> int:
        """Store the schedule if the subject's last sequence is ``expected_seq`` (0: if it has
        none); returns the new sequence."""
        headers = {
            H.MSG_ID: msg_id,
            H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
            H.SCHEDULE: spec,
            H.SCHEDULE_TARGET: subjects.schedule_fired(tenant, schedule_id),
            H.EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected_seq),
        }
        if time_zone:
            headers[H.SCHEDULE_TIME_ZONE] = time_zone
        try:
            ack = await self._js.publish(
                subjects.schedule(tenant, schedule_id), body, headers=headers, stream=STREAM
            )
        except APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise ScheduleConflict(schedule_id) from None
            if exc.code == 400:
                raise ScheduleRefused(exc.description or "the schedule is invalid") from None
            raise Unavailable("the bus (NATS) did not store the schedule") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) did not store the schedule") from exc
        return ack.seq

    async def delete(self, tenant: str, schedule_id: str) -> None:
        """Purge the schedule's subject: the server stops firing it."""
        try:
            await self._js.purge_stream(STREAM, subject=subjects.schedule(tenant, schedule_id))
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the bus (NATS) did not delete the schedule") from exc
