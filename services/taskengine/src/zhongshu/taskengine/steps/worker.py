"""The step worker: one `StepRequested` message is one step's work, acked when the step has
completed, failed, or (infer) handed its work to the agent.

A crash mid-step leaves the message unacked, so JetStream redelivers it after `ack_wait` and
the step runs again as a new attempt; the run's history says what is already done, so a
redelivery never completes a step twice. A failure with retries left is recorded, then the
request is published again (after a backoff) as the step's newest request; an older request
seen later is superseded and skipped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    StepCompleted,
    StepFailed,
    StepKind,
    StepRequested,
    StepStarted,
)
from zhongshu.runtime import Delivery
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine import metrics, naming
from zhongshu.taskengine.engine import SOURCE, Engine
from zhongshu.taskengine.steps import collect, infer, notify
from zhongshu.taskengine.steps.outcomes import (
    Awaiting,
    Failed,
    Outcome,
    StepContext,
    Succeeded,
)

log = logging.getLogger("zhongshu.taskengine.steps")

MAX_TAKES: Final = 5
"""A step message delivered this often without an ack (its worker died or hung each time)
fails the step for good rather than looping; the consumer's own limit is above it."""

RUNNERS: Final[dict[StepKind, Callable[[StepContext], Awaitable[Outcome]]]] = {
    "collect": collect.run,
    "infer": infer.run,
    "notify": notify.run,
}


async def on_step_requested(
    engine: Engine, envelope: Envelope[StepRequested], delivery: Delivery
) -> None:
    request = envelope.data
    latest = await engine.runlog.last_step_request(request.tenant, request.run_id, request.step)
    if latest is not None and latest[0] != delivery.stream_sequence:
        log.info("run %s step %s: request superseded by a retry", request.run_id, request.step)
        return
    state = await engine.runlog.read(request.tenant, request.run_id)
    progress = state.step(request.step)
    if state.started is None or state.finished or progress.done:
        return
    outbox = Outbox(
        delivery, source=SOURCE, tenant=request.tenant, correlation_id=state.correlation_id
    )
    attempt = progress.attempts + 1
    await outbox.publish_now(
        subjects.workflow_run(outbox.tenant, request.run_id),
        StepStarted(run_id=request.run_id, step=request.step, attempt=attempt),
        naming.step_started(request.run_id, request.step, attempt),
    )
    ctx = StepContext(engine, envelope, state.started, progress.retries_used, outbox)
    began = time.monotonic()
    async with delivery.keepalive():
        retries_used = progress.retries_used
        if delivery.num_delivered > MAX_TAKES:
            outcome: Outcome = Failed(
                f"taken {delivery.num_delivered} times without finishing "
                "(its worker crashed or hung each time)"
            )
            retries_used = request.retries  # no retry: it would go the same way
        else:
            outcome = await _run_with_timeout(ctx)
        elapsed = time.monotonic() - began
        duration_ms = int(elapsed * 1000)
        metrics.STEP_SECONDS.labels(request.kind).observe(elapsed)
        if isinstance(outcome, Awaiting):
            metrics.STEP_ATTEMPTS.labels(request.kind, "handed_off").inc()
        elif isinstance(outcome, Succeeded):
            await outbox.publish(
                subjects.workflow_run(outbox.tenant, request.run_id),
                StepCompleted(
                    run_id=request.run_id,
                    step=request.step,
                    output=outcome.output,
                    duration_ms=duration_ms,
                    attempt=attempt,
                ),
                naming.step_completed(request.run_id, request.step),
            )
            metrics.STEP_ATTEMPTS.labels(request.kind, "completed").inc()
        else:
            await record_failure(
                engine,
                outbox,
                envelope,
                delivery.stream_sequence,
                retries_used=retries_used,
                attempt=attempt,
                reason=outcome.reason,
                duration_ms=duration_ms,
            )


async def _run_with_timeout(ctx: StepContext) -> Outcome:
    timeout = ctx.request.timeout_s
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await RUNNERS[ctx.request.kind](ctx)
    except TimeoutError:
        if not deadline.expired():
            raise  # the bus timed out, not the step: redelivery retries it
        return Failed(f"timed out after {timeout:g}s")


async def record_failure(
    engine: Engine,
    outbox: Outbox,
    request: Envelope[StepRequested],
    request_sequence: int,
    *,
    retries_used: int,
    attempt: int,
    reason: str,
    duration_ms: int | None,
) -> None:
    """Record a failed attempt; with a retry left, request the step again after a backoff (only
    if ``request_sequence`` is still its newest request, so a retry is requested once)."""
    step = request.data
    failure = retries_used + 1
    final = retries_used >= step.retries
    await outbox.publish_now(
        subjects.workflow_run(outbox.tenant, step.run_id),
        StepFailed(
            run_id=step.run_id,
            step=step.step,
            reason=reason,
            attempt=attempt,
            final=final,
            duration_ms=duration_ms,
        ),
        naming.step_failed(step.run_id, step.step, failure),
    )
    metrics.STEP_ATTEMPTS.labels(step.kind, "failed" if final else "retried").inc()
    log.info(
        "run %s step %s attempt %d failed%s: %s",
        step.run_id,
        step.step,
        attempt,
        "" if final else f" (retry {failure} of {step.retries})",
        reason,
    )
    if final:
        return
    await asyncio.sleep(engine.settings.retry_backoff_s(failure))
    retry = wire.make_envelope(
        step,
        id=naming.step_requested(step.run_id, step.step, failure),
        source=SOURCE,
        tenant=step.tenant,
        correlation_id=request.correlation_id,
    )
    await engine.runlog.request_step(retry, after_sequence=request_sequence)
