"""What the two ways DingTalk delivers bring: the signed robot HTTP callback and Stream-mode
frames. Each is decoded, normalized (pure) and handed to the ingress gate as one event; the
platform gets its 200 / ACK only after the PubAck."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.ingress_dingtalk import normalize
from zhongshu.ingress_dingtalk.adapters.stream import Frame
from zhongshu.ingress_dingtalk.normalize import Inbound, MalformedPayload
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.ingress_dingtalk.signing import SignatureInvalid, verify_callback
from zhongshu.runtime.hubconfig import App, HubConfig
from zhongshu.runtime.ingress import IngressGate, Outcome, Rejected, read_body
from zhongshu.runtime.webhooks import WebhookRequest, WebhookResponse

log = logging.getLogger("zhongshu.ingress_dingtalk")

SOURCE = "zhongshu/ingress-dingtalk"
# The synchronous reply's format is unconfirmed (protocols §2.1): answer nothing in place.
EMPTY_REPLY = WebhookResponse.json({"msgtype": "empty"})
BUS_DOWN = WebhookResponse.json({"error": "bus unavailable"}, 503)


@dataclass
class DingTalkIngress:
    """What the callback and the frames share: the gate, the apps, the settings."""

    gate: IngressGate
    config: HubConfig
    settings: DingTalkIngressSettings

    def reconfigure(self, config: HubConfig) -> None:
        """A pushed configuration revision: applies to the next callback, no restart."""
        self.config = config

    def app(self, name: str, mode: str) -> App | None:
        """The configured DingTalk app ``name`` if it receives through ``mode``."""
        app = self.config.apps.get(name)
        if app is None or app.dingtalk is None or mode not in app.dingtalk.receive:
            return None
        return app

    async def publish(self, inbound: Inbound) -> Outcome:
        envelope = wire.make_envelope(
            inbound.event,
            id=inbound.event_id,
            source=SOURCE,
            tenant=inbound.tenant,
            conversation_id=inbound.conversation_id,
            correlation_id=inbound.event_id,
        )
        created = getattr(inbound.event, "sent_at", None) or getattr(
            inbound.event, "occurred_at", None
        )
        return await self.gate.accept(
            subject=subjects.chat_inbound(normalize.PLATFORM, inbound.tenant),
            envelope=envelope,
            created_at=created,
        )


# --- robot HTTP callback ----------------------------------------------------------------------


async def robot_callback(ingress: DingTalkIngress, request: WebhookRequest) -> WebhookResponse:
    name = request.path_params["app"]
    app = ingress.app(name, "http")
    try:
        inbound = await _verified_message(ingress, name, app, request)
    except Rejected as rejection:
        await ingress.gate.reject(
            rejection,
            app=name,
            tenant=app.tenant if app else "",
            remote=request.client,
        )
        return rejection.response()
    try:
        await ingress.publish(inbound)
    except Exception as exc:
        log.warning("bus unavailable, DingTalk will retry %s: %r", inbound.event_id, exc)
        return BUS_DOWN
    return EMPTY_REPLY


async def _verified_message(
    ingress: DingTalkIngress, name: str, app: App | None, request: WebhookRequest
) -> Inbound:
    if app is None or app.dingtalk is None:
        raise Rejected(404, "unknown app", f"no DingTalk app {name!r} receives HTTP callbacks")
    try:
        verify_callback(
            request.header("timestamp"),
            request.header("sign"),
            app.dingtalk.app_secret.get_secret_value(),
            max_skew_ms=int(ingress.settings.callback_max_skew_s * 1000),
        )
    except SignatureInvalid as exc:
        raise Rejected(401, exc.reason) from None
    body = await read_body(request)
    try:
        return normalize.robot_message(
            normalize.parse_json_object(body), app=name, tenant=app.tenant
        )
    except MalformedPayload as exc:
        raise Rejected(400, "malformed body", str(exc)) from None


# --- Stream mode ------------------------------------------------------------------------------


async def stream_frame(
    ingress: DingTalkIngress, name: str, app: App, frame: Frame
) -> dict[str, Any] | None:
    """One CALLBACK or EVENT frame: the ACK's data once published, None (no ACK: the
    platform redelivers) or ``LATER`` for an event when the bus failed."""
    is_event = frame.type == "EVENT"
    try:
        payload = normalize.parse_json_object(frame.data)
        if is_event:
            inbound = normalize.platform_event(frame.headers, payload, app=name, tenant=app.tenant)
        elif frame.topic == normalize.BOT_MESSAGE_TOPIC:
            inbound = normalize.robot_message(payload, app=name, tenant=app.tenant)
        elif frame.topic == normalize.CARD_CALLBACK_TOPIC:
            inbound = normalize.card_callback(
                payload, app=name, tenant=app.tenant, delivery_id=frame.message_id
            )
        else:
            log.info("%s: callback topic %s not subscribed; acknowledged", name, frame.topic)
            return {"response": {}}
    except MalformedPayload as exc:
        # Redelivering an unreadable frame would not make it readable: record it and ACK.
        await ingress.gate.reject(
            Rejected(400, "malformed frame", str(exc)), app=name, tenant=app.tenant
        )
        return {"status": "SUCCESS"} if is_event else {"response": {}}
    try:
        await ingress.publish(inbound)
    except Exception as exc:
        log.warning("%s: bus unavailable, frame %s left to redelivery: %r", name, frame, exc)
        return {"status": "LATER", "message": "bus unavailable"} if is_event else None
    return {"status": "SUCCESS", "message": "OK"} if is_event else {"response": {}}
