"""What the webhooks and the long connection do with what Feishu sends: a webhook's raw body
goes to ``domain`` to decide whether it is genuine, to ``normalize`` for what it means, and to
the ingress gate to be stored once; the platform hears 200 (or the long connection's ACK) only
after the PubAck, and 503 when the bus is down."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import CardActionReceived
from zhongshu.contracts.grants import ROLE_ADMIN
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.ingress_feishu import domain
from zhongshu.ingress_feishu.answers import AlertHandlers, card_answer
from zhongshu.ingress_feishu.normalize import (
    BotIdentity,
    Context,
    Result,
    normalize_card,
    normalize_event,
)
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.grants import GrantBook
from zhongshu.runtime.hubconfig import App, HubConfig
from zhongshu.runtime.ingress import IngressGate, Outcome, Rejected, read_body
from zhongshu.runtime.webhooks import WebhookRequest, WebhookResponse

log = logging.getLogger("zhongshu.ingress_feishu")

SOURCE = "zhongshu/ingress-feishu"
SUCCESS = WebhookResponse.json({"msg": "success"})
BUS_DOWN = WebhookResponse.json({"error": "bus unavailable"}, 503)


@dataclass(frozen=True)
class FeishuApp:
    """One configured Feishu app, as the webhooks need it."""

    name: str
    tenant: str
    secrets: domain.AppSecrets
    bot: BotIdentity
    app_id: str = ""
    app_secret: str = field(default="", repr=False)
    long_connection: bool = False
    alert_handlers: AlertHandlers = field(default_factory=AlertHandlers)

    @functools.cached_property
    def context(self) -> Context:
        """What normalization needs of the app (built once, not per event)."""
        return Context(self.name, self.tenant, self.bot)

    @functools.cached_property
    def subject(self) -> str:
        return subjects.chat_inbound("feishu", self.tenant)

    @functools.cached_property
    def id_scope(self) -> str:
        """Event ids are scoped per app: two bots in one group see the same message_id."""
        return f"feishu:{self.name}"

    @classmethod
    def from_config(
        cls, name: str, app: App, bot_name: str | None, grants: GrantBook | None = None
    ) -> FeishuApp:
        assert app.feishu is not None  # App validates that the platform section exists
        creds = app.feishu

        def granted_admin(ids: frozenset[str]) -> bool:
            return grants is not None and ROLE_ADMIN in grants.roles(app.tenant, name, ids)

        return cls(
            name=name,
            tenant=app.tenant,
            secrets=domain.AppSecrets(
                encrypt_key=creds.encrypt_key.get_secret_value() if creds.encrypt_key else None,
                verification_token=(
                    creds.verification_token.get_secret_value()
                    if creds.verification_token
                    else None
                ),
            ),
            bot=BotIdentity(open_id=creds.bot_open_id, name=bot_name),
            app_id=creds.app_id,
            app_secret=creds.app_secret.get_secret_value(),
            long_connection="long_connection" in creds.receive,
            alert_handlers=AlertHandlers(
                admins=frozenset(app.access.admins),
                deny=frozenset(app.access.deny),
                granted_admin=granted_admin,
            ),
        )


class FeishuIngress:
    """What the webhooks share in one process: the apps, the gate, the settings."""

    def __init__(
        self,
        settings: FeishuIngressSettings,
        config: HubConfig,
        gate: IngressGate,
        bus_connected: Callable[[], bool],
        grants: GrantBook | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.grants = grants
        self.apps: dict[str, FeishuApp] = {}
        self.reconfigure(config)
        self._bus_connected = bus_connected

    def reconfigure(self, config: HubConfig) -> None:
        """Apply a configuration (at start, and on every pushed revision): apps added, changed
        or removed take effect for the next request, without a restart."""
        self.apps = {
            name: FeishuApp.from_config(name, app, self.settings.bot_names.get(name), self.grants)
            for name, app in config.apps.items()
            if app.platform == "feishu"
        }

    def app(self, name: str) -> FeishuApp:
        app = self.apps.get(name)
        if app is None:
            raise Rejected(404, "unknown app", f"no Feishu app named {name[:64]!r}")
        return app

    async def events(self, request: WebhookRequest) -> WebhookResponse:
        return await self._handle(request, domain.open_event_request, normalize_event)

    async def cards(self, request: WebhookRequest) -> WebhookResponse:
        return await self._handle(request, domain.open_card_request, normalize_card)

    async def _handle(
        self,
        request: WebhookRequest,
        verify: Callable[..., domain.Challenge | domain.Verified],
        normalize: Callable[[dict[str, Any], Context], Result],
    ) -> WebhookResponse:
        name = request.path_params["app"]
        tenant = ""
        try:
            app = self.app(name)
            tenant = app.tenant
            body = await read_body(request)
            opened = verify(
                body,
                signature_headers(request),
                app.secrets,
                now=time.time(),
                max_skew_s=self.settings.max_timestamp_skew_s,
            )
            if isinstance(opened, domain.Challenge):
                return WebhookResponse.json({"challenge": opened.challenge})
            result = normalize(opened.payload, app.context)
        except Rejected as rejection:
            await self.gate.reject(rejection, app=name, tenant=tenant, remote=request.client)
            return rejection.response()
        try:
            await self.publish(app, result)
        except Exception as exc:
            log.warning("bus unavailable, answering 503 so Feishu retries: %r", exc)
            return BUS_DOWN
        if isinstance(result.event, CardActionReceived):
            # A card click is answered with a toast (an alert button's says whether the user
            # may press it) or the configured card; the older card format takes a card (or
            # nothing), not a toast, so it gets an empty object.
            if "header" not in opened.payload:
                return WebhookResponse.json({})
            return WebhookResponse.json(self.card_answer(app, result.event))
        return SUCCESS

    def card_answer(self, app: FeishuApp, event: CardActionReceived) -> dict[str, Any]:
        return card_answer(event, app.alert_handlers, self.settings.card_response)

    async def pushed(self, app: FeishuApp, kind: str, payload: bytes) -> tuple[int, bytes | None]:
        """An event or card action from the long connection: already authenticated by the
        connection, so no signature or token; stored before the ACK. Raises when the bus
        cannot take it (ACKed 500: Feishu re-pushes)."""
        card = kind == "card"
        try:
            try:
                opened = json.loads(payload)
            except (ValueError, RecursionError):  # RecursionError: nested past the parser
                raise Rejected(400, "malformed body", "frame payload is not JSON") from None
            if not isinstance(opened, dict):
                raise Rejected(400, "malformed body", "frame payload is not a JSON object")
            normalize = normalize_card if card else normalize_event
            result = normalize(opened, app.context)
        except Rejected as rejection:
            await self.gate.reject(
                rejection, app=app.name, tenant=app.tenant, remote="long_connection"
            )
            return rejection.status, None
        await self.publish(app, result)
        if isinstance(result.event, CardActionReceived):
            return 200, json.dumps(self.card_answer(app, result.event)).encode()
        return 200, None

    async def publish(self, app: FeishuApp, result: Result) -> Outcome:
        """Store the event once; raises when the bus cannot take it."""
        if not self._bus_connected():
            raise ConnectionError("not connected to NATS")
        envelope = wire.make_envelope(
            result.event,
            id=derive_msg_id(app.id_scope, result.unique_id),
            source=SOURCE,
            tenant=app.tenant,
            conversation_id=result.conversation_id,
        )
        return await self.gate.accept(
            subject=app.subject,
            envelope=envelope,
            created_at=created_at(result.event),
            timeout_s=self.settings.publish_timeout_s,
        )


def signature_headers(request: WebhookRequest) -> domain.SignatureHeaders:
    return domain.SignatureHeaders(
        timestamp=request.header("x-lark-request-timestamp"),
        nonce=request.header("x-lark-request-nonce"),
        signature=request.header("x-lark-signature"),
    )


def created_at(event: object) -> datetime | None:
    """When the platform created the event (it re-pushes with the same time)."""
    value = getattr(event, "sent_at", None) or getattr(event, "occurred_at", None)
    return value if isinstance(value, datetime) else None
