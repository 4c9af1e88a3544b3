"""Events on `events.>` fire the triggers they match: one `TaskRequested` per (event, trigger),
under an id derived from both, so the same event seen twice creates one task. An event that is
not a JSON object, or a condition that fails on it, is logged and skipped: someone else's bad
event must never block the stream."""

from __future__ import annotations

import logging

from zhongshu.contracts import subjects
from zhongshu.runtime import Delivery
from zhongshu.runtime.outbox import Outbox
from zhongshu.taskengine import metrics
from zhongshu.taskengine.conditions import ConditionError
from zhongshu.taskengine.engine import SOURCE, Engine
from zhongshu.taskengine.triggers import event_id, parse_event, task_for

log = logging.getLogger("zhongshu.taskengine.firing")


async def on_event(engine: Engine, raw: bytes, delivery: Delivery) -> None:
    event = parse_event(raw)
    if event is None:
        metrics.EVENTS_SKIPPED.labels("not_json").inc()
        log.warning(
            "skipping %s seq %d: not a JSON object", delivery.subject, delivery.stream_sequence
        )
        return
    stored_at = delivery.msg.metadata.timestamp
    for trigger in engine.triggers.triggers:
        try:
            if not trigger.matches(delivery.subject, event, stored_at):
                continue
            task = task_for(trigger.definition, delivery.subject, event, raw)
        except (ConditionError, ValueError) as exc:
            metrics.EVENTS_SKIPPED.labels("condition_failed").inc()
            log.warning("trigger %s skipped %s: %s", trigger.key, delivery.subject, exc)
            continue
        outbox = Outbox(
            delivery, source=SOURCE, tenant=task.tenant, correlation_id=event_id(event, raw)
        )
        await outbox.publish(subjects.task_requested(task.tenant), task, task.task_id)
        metrics.TRIGGERS_FIRED.inc()
        log.info("trigger %s fired on %s: task %s", trigger.key, delivery.subject, task.task_id)
