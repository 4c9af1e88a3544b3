"""Run histories and step requests, read from and written to the WORKFLOWS stream.

A run is rebuilt from its own subject with one direct read per event (`next_by_subj`) rather
than an ephemeral consumer: runs hold a few dozen events, and a read creates no server state
to clean up after a crash."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import StepRequested
from zhongshu.runtime.bus import Publisher
from zhongshu.taskengine.runstate import RunState, fold

log = logging.getLogger("zhongshu.taskengine.runlog")

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code when `Nats-Expected-Last-Subject-Sequence` does not hold."""


class RunLog:
    def __init__(self, js: JetStreamContext, publisher: Publisher) -> None:
        self._js = js
        self._publisher = publisher

    async def history(self, tenant: str, run_id: str) -> list[Envelope[Any]]:
        subject = subjects.workflow_run(tenant, run_id)
        found: list[Envelope[Any]] = []
        seq = 1
        while True:
            try:
                msg = await self._js.get_msg(
                    streams.WORKFLOWS.name, seq=seq, subject=subject, next=True
                )
            except NotFoundError:
                return found
            if msg.seq is None:
                return found
            seq = msg.seq + 1
            try:
                found.append(wire.decode_any(msg.data or b""))
            except msgspec.DecodeError as exc:  # not ours: someone else's bytes on our subject
                log.warning("skipping undecodable message %d on %s: %s", msg.seq, subject, exc)

    async def read(self, tenant: str, run_id: str) -> RunState:
        return fold(run_id, await self.history(tenant, run_id))

    async def last_step_request(
        self, tenant: str, run_id: str, step: str
    ) -> tuple[int, Envelope[StepRequested]] | None:
        """The newest request of a step (a retry supersedes the one before) and its sequence."""
        try:
            msg = await self._js.get_last_msg(
                streams.WORKFLOWS.name, subjects.workflow_step(tenant, run_id, step)
            )
        except NotFoundError:
            return None
        if msg.seq is None:
            return None
        return msg.seq, wire.decode(msg.data or b"", StepRequested)

    async def request_step(self, envelope: Envelope[StepRequested], *, after_sequence: int) -> bool:
        """Publish a step's request only if the newest one on its subject is still
        ``after_sequence`` (0: none yet). False when someone else already did: a join reached
        by two branches at once, or a retry published before a crash, is requested once."""
        request = envelope.data
        try:
            await self._publisher.publish(
                subjects.workflow_step(request.tenant, request.run_id, request.step),
                wire.encode(envelope),
                msg_id=envelope.id,
                headers={H.EXPECTED_LAST_SUBJECT_SEQUENCE: str(after_sequence)},
            )
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return False
            raise
        return True
