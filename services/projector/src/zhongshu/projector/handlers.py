"""The projector's consumers: one durable pull consumer per stream, each message handed to that
stream's ``LiveWriter`` (batched, ordered upserts)."""

from __future__ import annotations

from typing import Any

from zhongshu.projector.projections import Projection, all_projections
from zhongshu.projector.resources import ProjectorDeps
from zhongshu.projector.settings import ProjectorSettings
from zhongshu.runtime import Delivery, Service

BATCH = 100
"""Messages per fetch, hence per transaction."""


def _raw(data: bytes) -> bytes:
    return data  # projections decode: some streams hold more than envelopes


def register(service: Service[ProjectorSettings, ProjectorDeps]) -> None:
    for projection in all_projections():
        _register(service, projection)


def _register(
    service: Service[ProjectorSettings, ProjectorDeps], projection: Projection[Any]
) -> None:
    stream = projection.stream

    @service.consumes(
        stream=stream,
        subjects=projection.subjects,
        durable=projection.durable,
        decode=_raw,
        batch=BATCH,
        # Messages are handed over one task each, so the loop keeps fetching while the writer
        # gathers and writes a batch (a fetch returns what is there, mostly one message at a
        # time at moderate rates; one transaction each would cost three round trips).
        # The writer queues them in fetch order and writes batches one after another.
        concurrency=BATCH,
        # A replica holds at most one batch unacked (order across replicas: see the README).
        max_ack_pending=BATCH,
    )
    async def handle(deps: ProjectorDeps, raw: bytes, delivery: Delivery) -> None:
        await deps.writers[stream].handle(raw, delivery)
