"""notify: the engine itself says the text, never the model through a tool, so a run that
completes has notified. A chat target becomes a `ReplyGenerated` for the notifier (its reply id
is the same on every attempt, so the notifier sends it once); a callback target is POSTed here,
signed with the secret of task callbacks, under an event id that is the same on every attempt
for the receiver to deduplicate."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.definitions import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SUBSCRIPTION_HEADER,
    TASK_CALLBACKS_ID,
    TIMESTAMP_HEADER,
    sign_callback,
    subscription_secret,
)
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import AuditRecorded, ReplyGenerated, StepRequested
from zhongshu.contracts.events.audit import OUTCOME_DENIED
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.contracts.notifications import NOTIFICATION_TYPE, WorkflowNotification
from zhongshu.platforms.egress import OutboundRefused
from zhongshu.taskengine import naming, templates
from zhongshu.taskengine.engine import SOURCE
from zhongshu.taskengine.steps.outcomes import Failed, Outcome, StepContext, Succeeded


async def run(ctx: StepContext) -> Outcome:
    request = ctx.request
    text = notification_text(request)
    chats: list[dict[str, str]] = []
    callbacks: list[dict[str, Any]] = []
    for index, target in enumerate(request.config.get("targets") or []):
        if not isinstance(target, dict):
            return Failed(f"targets[{index}] is not a target")
        if isinstance(target.get("url"), str):
            outcome = await _post(ctx, index, target["url"], text)
            if isinstance(outcome, Failed):
                return outcome
            callbacks.append({"url": target["url"], "status": outcome})
        else:
            sent = await _reply(ctx, str(target.get("app", "")), str(target.get("chat", "")), text)
            if isinstance(sent, Failed):
                return sent
            chats.append(sent)
    return Succeeded({"text": text, "chats": chats, "callbacks": callbacks})


def notification_text(request: StepRequested) -> str:
    """``config.text`` (placeholders already filled), or else what the needed steps said."""
    text = request.config.get("text")
    if isinstance(text, str) and text:
        return text
    said = [
        templates.as_text(output.get("text") if isinstance(output, dict) else None)
        for step, output in request.inputs.items()
        if step != "run"
    ]
    return "\n\n".join(s for s in said if s)


async def _reply(
    ctx: StepContext, app_name: str, chat_id: str, text: str
) -> dict[str, str] | Failed:
    request = ctx.request
    app = ctx.engine.config.current.app(app_name)
    if app is None or app.tenant != request.tenant or not chat_id:
        return Failed(f"no app {app_name!r} with a chat {chat_id!r} in tenant {request.tenant!r}")
    reply_id = naming.reply(request.run_id, request.step, app_name, chat_id)
    reply = ReplyGenerated(
        reply_id=reply_id,
        platform=app.platform,
        app=app_name,
        tenant=request.tenant,
        chat_id=chat_id,
        text=text,
    )
    await ctx.outbox.reply(reply)  # under the id of a whole reply, as the agent's
    return {"app": app_name, "chat": chat_id, "reply_id": reply_id}


async def _audit_refusal(ctx: StepContext, index: int, refused: OutboundRefused) -> None:
    """On the audit trail as the notifier's refusals are (the watchdog alerts on them); once
    per (run, step, target), whatever the attempt."""
    request = ctx.request
    record = AuditRecorded(
        actor=f"workflow:{request.workflow}",
        action="callback.refused",
        target=refused.host,
        outcome=OUTCOME_DENIED,
        tenant=request.tenant,
        detail=str(refused),
        labels={"run_id": request.run_id, "step": request.step},
    )
    msg_id = derive_msg_id(naming.callback_event(request.run_id, request.step, index), "refused")
    await ctx.outbox.publish(subjects.audit(request.tenant, "security"), record, msg_id)


async def _post(ctx: StepContext, index: int, url: str, text: str) -> int | Failed:
    request = ctx.request
    key = ctx.engine.settings.callback_key
    if key is None:
        return Failed("ZHONGSHU_CALLBACK_KEY is not set: callback targets cannot be signed")
    event_id = naming.callback_event(request.run_id, request.step, index)
    body = msgspec.json.encode(
        Envelope(
            id=event_id,
            source=SOURCE,
            type=NOTIFICATION_TYPE,
            time=datetime.now(UTC),
            tenant=request.tenant,
            data=WorkflowNotification(
                run_id=request.run_id,
                workflow=request.workflow,
                step=request.step,
                text=text,
                inputs=request.inputs,
            ),
        )
    )
    timestamp = int(time.time())
    secret = subscription_secret(key.get_secret_value().encode(), request.tenant, TASK_CALLBACKS_ID)
    headers = {
        H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
        SIGNATURE_HEADER: sign_callback(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_ID_HEADER: event_id,
        SUBSCRIPTION_HEADER: TASK_CALLBACKS_ID,
    }
    try:
        response = await ctx.engine.callback_http.post(url, content=body, headers=headers)
    except OutboundRefused as exc:
        await _audit_refusal(ctx, index, exc)
        return Failed(f"callback refused: {exc}")
    except httpx.HTTPError as exc:
        return Failed(f"callback {url} failed: {type(exc).__name__}: {exc}")
    if not response.is_success:
        return Failed(f"callback {url} answered HTTP {response.status_code}")
    return response.status_code
