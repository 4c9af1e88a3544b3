"""A fake Feishu open platform for what the notifier calls (protocols §1.4): the
``tenant_access_token``, sending to a chat, replying to a message (in its thread), updating a
card the app sent (``PATCH /im/v1/messages/{id}``), CardKit streaming cards, signed
custom-bot webhooks, and the contact API's single-user look-up (``GET
/contact/v3/users/{open_id}``, for the router's department whitelist: ``set_departments``; an
unknown user answers 41050, more than ``contact_limit`` calls a second 429/99991400).
It checks credentials, tokens and signatures, deduplicates by request
``uuid`` for an hour like the platform, enforces 5 QPS per chat (HTTP 429, code 99991400 with
``x-ogw-ratelimit-reset``), 5 updates/s per message (230020) and the app's quota of each API it
serves (``api_limit``/s and ``api_limit_per_min``/min, 50 and 1000 like the platform: 429 /
99991400 again, the arrival of every call let through kept in ``api_calls``), refuses
over-long content (230025) and cards with a malformed callback button (230099), records every
message in ``deliveries`` and every card update in ``updates``; ``buttons`` reads a card's
buttons (JSON 1.0 or 2.0), ``button`` finds the newest card of a chat showing one::

    async with FakeFeishuOpenAPI(app_id="cli_x", app_secret="s") as fake:
        # FEISHU_BASE_URL = fake.base_url
        message_id = fake.user_message("oc_chat")   # something to reply to
        fake.set_departments("ou_alice", "od-sales")  # what the contact API answers
        card_id = fake.bot_card("oc_chat", {"config": {"update_multi": True}, ...})
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zhongshu.devstack.fakes.base_openapi import FakeServer, Injected, SlidingWindow

UUID_TTL_S = 3600.0
MAX_TEXT_BYTES = 150 * 1024
MAX_CARD_BYTES = 30 * 1024
UPDATABLE_FOR_S = 14 * 24 * 3600.0  # a card can be updated up to 14 days after it was sent


def custom_bot_sign(secret: str, timestamp: int | str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


@dataclass
class FeishuDelivery:
    kind: str
    """``send``, ``reply`` or ``bot``."""
    chat_id: str
    message_id: str
    msg_type: str
    content: dict[str, Any]
    parent_id: str | None = None
    uuid: str | None = None
    reply_in_thread: bool = False
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return json.dumps(self.content, ensure_ascii=False)


@dataclass
class Message:
    """What the fake knows of a message: who sent it, when (wall clock), its type and content."""

    chat_id: str
    msg_type: str
    content: dict[str, Any]
    by_app: bool
    sent_at: float = field(default_factory=time.time)
    recalled: bool = False


@dataclass(frozen=True)
class CardButton:
    """A button of a card as a user sees it: its label, and the ``value`` a click posts back
    (``card.action.trigger``), or the URL it opens."""

    label: str
    value: dict[str, Any] | None = None
    url: str | None = None


def card_buttons(card: dict[str, Any]) -> list[CardButton]:
    """Every button of a card, JSON 1.0 (``elements`` with ``action`` blocks) or 2.0
    (``body.elements``, callback ``behaviors``), in the order shown."""
    found: list[CardButton] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("tag") == "button":
                text = node.get("text")
                label = str(text.get("content", "")) if isinstance(text, dict) else ""
                value = node.get("value")
                url = node.get("url") or (node.get("multi_url") or {}).get("url")
                for behavior in node.get("behaviors") or ():
                    if behavior.get("type") == "callback":
                        value = behavior.get("value")
                    elif behavior.get("type") == "open_url":
                        url = behavior.get("default_url")
                found.append(CardButton(label, value if isinstance(value, dict) else None, url))
                return
            for value in node.values():
                walk(value)

    walk(
        card.get("body", {}).get("elements")
        if card.get("schema") == "2.0"
        else card.get("elements")
    )
    return found


def card_text(card: dict[str, Any]) -> str:
    """All the text a card shows (header, markdown and plain text), joined by newlines."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("tag") in ("markdown", "plain_text", "lark_md") and "content" in node:
                parts.append(str(node["content"]))
            for value in node.values():
                walk(value)

    walk(card)
    return "\n".join(parts)


def _buttons_valid(card: dict[str, Any]) -> bool:
    """A JSON 1.0 button's ``value`` must be an object (Feishu refuses the card otherwise)."""
    if card.get("schema") == "2.0":
        return True

    def walk(node: Any) -> bool:
        if isinstance(node, list):
            return all(walk(item) for item in node)
        if isinstance(node, dict):
            if node.get("tag") == "button" and "value" in node:
                return isinstance(node["value"], dict)
            return all(walk(value) for value in node.values())
        return True

    return walk(card.get("elements"))


@dataclass
class CardUpdate:
    """One accepted ``PATCH /open-apis/im/v1/messages/{message_id}``."""

    message_id: str
    card: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class StreamingCard:
    """A CardKit card: its elements' text, streaming mode, the last sequence and every op."""

    card: dict[str, Any]
    elements: dict[str, str]
    streaming: bool
    sequence: int = 0
    ops: list[tuple[float, int, str]] = field(default_factory=list)  # (when, sequence, what)


class FakeFeishuOpenAPI(FakeServer):
    def __init__(
        self,
        *,
        app_id: str = "cli_app",
        app_secret: str = "feishu-app-secret",
        bots: dict[str, str | None] | None = None,
        chat_limit: int = 5,
        chat_window_s: float = 1.0,
        token_lifetime_s: int = 7200,
        contact_limit: int = 50,
        api_limit: int = 50,
        api_limit_per_min: int = 1000,
    ) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.contacts: dict[str, tuple[str, ...]] = {}  # open_id → open_department_ids
        self.names: dict[str, str] = {}  # open_id → name (needs contact:user.base:readonly)
        self.contact_requests: list[str] = []  # open_ids asked for, refused calls included
        self.contact_limit = SlidingWindow(contact_limit, 1.0)  # 50/s per app (and 1000/min)
        self.bots = dict(bots or {})  # hook token → secret
        self.chat_limit = SlidingWindow(chat_limit, chat_window_s)
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.messages: dict[str, Message] = {}
        self.updates: list[CardUpdate] = []
        self.message_limit = SlidingWindow(5, 1.0)  # card updates: 5 QPS per message
        self.uuids: dict[str, tuple[str, float]] = {}  # uuid → (message id, when)
        self.deduplicated = 0
        self.deliveries: list[FeishuDelivery] = []
        self.errors: list[tuple[str, Any]] = []
        self.cards: dict[str, StreamingCard] = {}
        self.card_limit = SlidingWindow(10, 1.0)  # CardKit: 10 ops/s per card
        # Per API per app, counted on arrival before anything else is looked at, as a gateway
        # does (the fake serves one app, so the API names the bucket).
        self.api_limits = (SlidingWindow(api_limit, 1.0), SlidingWindow(api_limit_per_min, 60.0))
        self.api_calls: dict[str, list[float]] = defaultdict(list)  # API → arrival times
        super().__init__(
            [
                Route(
                    "/open-apis/auth/v3/tenant_access_token/internal", self._token, methods=["POST"]
                ),
                Route("/open-apis/im/v1/messages", self._send, methods=["POST"]),
                Route(
                    "/open-apis/im/v1/messages/{message_id}/reply", self._reply, methods=["POST"]
                ),
                Route(
                    "/open-apis/im/v1/messages/{message_id}", self._update_card, methods=["PATCH"]
                ),
                Route("/open-apis/bot/v2/hook/{token}", self._bot, methods=["POST"]),
                Route("/open-apis/contact/v3/users/{user_id}", self._contact_user, methods=["GET"]),
                Route("/open-apis/cardkit/v1/cards", self._create_card, methods=["POST"]),
                Route(
                    "/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content",
                    self._card_content,
                    methods=["PUT"],
                ),
                Route(
                    "/open-apis/cardkit/v1/cards/{card_id}/settings",
                    self._card_settings,
                    methods=["PATCH"],
                ),
            ]
        )

    def user_message(self, chat_id: str) -> str:
        """A message a user sent in ``chat_id`` (what a reply answers)."""
        message_id = f"om_{uuid.uuid4().hex}"
        self.messages[message_id] = Message(chat_id, "text", {"text": "hi"}, by_app=False)
        return message_id

    def bot_card(self, chat_id: str, card: dict[str, Any], *, sent_days_ago: float = 0) -> str:
        """An interactive card the app sent to ``chat_id`` earlier (what a user clicks)."""
        message_id = f"om_{uuid.uuid4().hex}"
        sent_at = time.time() - sent_days_ago * 24 * 3600
        self.messages[message_id] = Message(chat_id, "interactive", card, True, sent_at)
        return message_id

    def cards_in(self, chat_id: str) -> list[str]:
        """The interactive messages the app sent to ``chat_id``, oldest first."""
        return [
            message_id
            for message_id, message in self.messages.items()
            if message.chat_id == chat_id and message.by_app and message.msg_type == "interactive"
        ]

    def card(self, message_id: str) -> dict[str, Any]:
        """The card message ``message_id`` shows now (after its updates)."""
        return self.messages[message_id].content

    def buttons(self, message_id: str) -> list[CardButton]:
        return card_buttons(self.card(message_id))

    def button(self, chat_id: str, label: str) -> tuple[str, CardButton]:
        """(message id, button) of the newest card in ``chat_id`` showing a button ``label``;
        KeyError when none does."""
        for message_id in reversed(self.cards_in(chat_id)):
            for button in self.buttons(message_id):
                if button.label == label:
                    return message_id, button
        raise KeyError(f"no card in {chat_id} shows a button {label!r}")

    def set_departments(self, open_id: str, *department_ids: str, name: str = "") -> None:
        """Put a user in the contacts, in these departments (open_department_id values), with
        ``name`` (the look-up answers it as the platform does when the app may read names)."""
        self.contacts[open_id] = department_ids
        if name:
            self.names[open_id] = name

    @property
    def rate_limit_errors(self) -> int:
        return sum(1 for _, code in self.errors if code == 99991400)

    # --- endpoints ------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        body = await request.json()
        self.token_requests += 1
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            return JSONResponse({"code": 10014, "msg": "app secret invalid"})
        token = f"t-{uuid.uuid4().hex}"
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        return JSONResponse(
            {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": self.token_lifetime_s}
        )

    def _over_quota(self, request: Request, api: str) -> Response | None:
        """The app's quota of ``api``: a 429 when a window is full, else the call is counted."""
        full = [window for window in self.api_limits if window.full(api)]
        if full:
            self.errors.append((request.url.path, 99991400))
            return JSONResponse(
                {"code": 99991400, "msg": "request trigger frequency limit"},
                status_code=429,
                headers={
                    "x-ogw-ratelimit-limit": str(full[0].limit),
                    "x-ogw-ratelimit-reset": f"{max(1, round(full[0].reset_in(api) + 0.5))}",
                },
            )
        for window in self.api_limits:
            window.record(api)
        self.api_calls[api].append(time.monotonic())
        return None

    async def _send(self, request: Request) -> Response:
        if refused := self._over_quota(request, "im.message.create"):
            return refused
        if request.query_params.get("receive_id_type") != "chat_id":
            return self._err(request, 230001, "invalid receive_id_type", 400)
        body = await request.json()
        return await self._im(request, "send", body.get("receive_id", ""), body, None)

    async def _reply(self, request: Request) -> Response:
        if refused := self._over_quota(request, "im.message.reply"):
            return refused
        parent = request.path_params["message_id"]
        original = self.messages.get(parent)
        if original is None or original.recalled:
            return self._err(request, 230011, "the message was withdrawn or does not exist", 400)
        body = await request.json()
        return await self._im(request, "reply", original.chat_id, body, parent)

    async def _update_card(self, request: Request) -> Response:
        if refused := self._over_quota(request, "im.message.patch"):
            return refused
        if not self._token_ok(request):
            return self._err(request, 99991663, "Invalid access token for authorization", 400)
        message_id = request.path_params["message_id"]
        message = self.messages.get(message_id)
        if message is None or message.recalled:
            return self._err(request, 230011, "The message is recalled.", 400)
        if not message.by_app:
            return self._err(request, 230001, "only the sender can update a message", 400)
        if message.msg_type != "interactive":
            return self._err(request, 230001, "only interactive messages can be updated", 400)
        if time.time() - message.sent_at > UPDATABLE_FOR_S:
            return self._err(
                request, 230031, "Message can only be modified within 14 days after sending.", 400
            )
        body = await request.json()
        raw = body.get("content")
        if not isinstance(raw, str):
            return self._err(request, 230001, "content must be a JSON string", 400)
        if len(raw.encode()) > MAX_CARD_BYTES:
            return self._err(
                request, 230025, "The length of the message content reaches its limit.", 400
            )
        try:
            card = json.loads(raw)
        except ValueError:
            return self._err(request, 230001, "content is not JSON", 400)
        if not _buttons_valid(card):
            return self._err(request, 230099, "failed to create card content: button value", 400)
        if not (_shared(message.content) and _shared(card)):
            return self._err(
                request, 230001, "update_multi must be true before and after the update", 400
            )
        if not self.message_limit.allow(message_id):
            return self._err(request, 230020, "This operation triggers the frequency limit.", 400)
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        message.content = card
        self.updates.append(CardUpdate(message_id, card))
        self._notify()
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"code": 0, "msg": "success", "data": {}})

    async def _im(
        self, request: Request, kind: str, chat_id: str, body: dict[str, Any], parent: str | None
    ) -> Response:
        header = request.headers.get("authorization", "")
        expiry = self.tokens.get(header.removeprefix("Bearer "))
        if expiry is None or expiry <= time.monotonic():
            return self._err(request, 99991663, "Invalid access token for authorization", 400)
        request_uuid = body.get("uuid")
        if request_uuid:
            seen = self.uuids.get(request_uuid)
            if seen and seen[1] > time.monotonic() - UUID_TTL_S:
                self.deduplicated += 1
                return JSONResponse({"code": 0, "msg": "success", "data": {"message_id": seen[0]}})
        if not self.chat_limit.allow(chat_id):
            self.errors.append((request.url.path, 99991400))
            reset = self.chat_limit.reset_in(chat_id)
            return JSONResponse(
                {"code": 99991400, "msg": "request trigger frequency limit"},
                status_code=429,
                headers={
                    "x-ogw-ratelimit-limit": str(self.chat_limit.limit),
                    "x-ogw-ratelimit-reset": f"{max(1, round(reset + 0.5))}",
                },
            )
        msg_type = body.get("msg_type", "")
        raw = body.get("content", "")
        limit = MAX_TEXT_BYTES if msg_type == "text" else MAX_CARD_BYTES
        if len(raw.encode()) > limit:
            return self._err(request, 230025, "message content too long", 400)
        try:
            content = json.loads(raw)
        except ValueError:
            return self._err(request, 230001, "content is not JSON", 400)
        if (
            msg_type == "interactive"
            and content.get("type") == "card"
            and content.get("data", {}).get("card_id") not in self.cards
        ):
            return self._err(request, 230099, "failed to create card content: unknown card", 400)
        if msg_type == "interactive" and not _buttons_valid(content):
            return self._err(request, 230099, "failed to create card content: button value", 400)
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        message_id = f"om_{uuid.uuid4().hex}"
        self.messages[message_id] = Message(chat_id, msg_type, content, by_app=True)
        if request_uuid:
            self.uuids[request_uuid] = (message_id, time.monotonic())
        self.deliveries.append(
            FeishuDelivery(
                kind,
                chat_id,
                message_id,
                msg_type,
                content,
                parent,
                request_uuid,
                bool(body.get("reply_in_thread")),
            )
        )
        self._notify()
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"code": 0, "msg": "success", "data": {"message_id": message_id}})

    async def _bot(self, request: Request) -> Response:
        token = request.path_params["token"]
        if token not in self.bots:
            return self._err(request, 19001, "param invalid: incoming webhook access token invalid")
        body = await request.json()
        secret = self.bots[token]
        if secret is not None:
            timestamp = str(body.get("timestamp", ""))
            if (
                not timestamp.isdigit()
                or abs(time.time() - int(timestamp)) > 3600
                or not hmac.compare_digest(
                    str(body.get("sign", "")), custom_bot_sign(secret, timestamp)
                )
            ):
                return self._err(
                    request, 19021, "sign match fail or timestamp is not within one hour"
                )
        if not self.chat_limit.allow(f"bot:{token}"):
            return self._err(request, 11232, "frequency limited")
        msg_type = body.get("msg_type", "")
        content = body.get("card") if msg_type == "interactive" else body.get("content")
        self.deliveries.append(
            FeishuDelivery("bot", token, f"om_{uuid.uuid4().hex}", msg_type, content or {})
        )
        self._notify()
        return JSONResponse({"code": 0, "msg": "success", "data": {}})

    async def _contact_user(self, request: Request) -> Response:
        """Contact v3 "get a single user", as the router asks it: by open_id, departments as
        open_department_id."""
        open_id = request.path_params["user_id"]
        self.contact_requests.append(open_id)
        if not self._token_ok(request):
            return self._err(request, 99991663, "Invalid access token for authorization", 400)
        query = request.query_params
        if query.get("user_id_type", "open_id") != "open_id" or (
            query.get("department_id_type", "open_department_id") != "open_department_id"
        ):
            return self._err(request, 99992402, "field validation failed", 400)
        if not self.contact_limit.allow(self.app_id):
            self.errors.append((request.url.path, 99991400))
            return JSONResponse(
                {"code": 99991400, "msg": "request trigger frequency limit"},
                status_code=429,
                headers={"x-ogw-ratelimit-limit": str(self.contact_limit.limit)},
            )
        injected = self.next_injected()
        if injected:
            return await self._answer(injected)
        departments = self.contacts.get(open_id)
        if departments is None:
            return self._err(request, 41050, "no user authority error", 400)
        user: dict[str, Any] = {"open_id": open_id, "department_ids": list(departments)}
        if open_id in self.names:
            user["name"] = self.names[open_id]
        return JSONResponse({"code": 0, "msg": "success", "data": {"user": user}})

    # --- CardKit ----------------------------------------------------------------------------

    def _token_ok(self, request: Request) -> bool:
        expiry = self.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        return expiry is not None and expiry > time.monotonic()

    async def _create_card(self, request: Request) -> Response:
        if refused := self._over_quota(request, "cardkit.card.create"):
            return refused
        if not self._token_ok(request):
            return self._err(request, 99991663, "Invalid access token for authorization", 400)
        body = await request.json()
        if body.get("type") != "card_json":
            return self._err(request, 230001, "type must be card_json", 400)
        card = json.loads(body.get("data", "{}"))
        elements = {
            e["element_id"]: e.get("content", "")
            for e in card.get("body", {}).get("elements", [])
            if "element_id" in e
        }
        card_id = f"card_{uuid.uuid4().hex}"
        streaming = bool(card.get("config", {}).get("streaming_mode"))
        self.cards[card_id] = StreamingCard(card, elements, streaming)
        return JSONResponse({"code": 0, "msg": "success", "data": {"card_id": card_id}})

    async def _card_op(self, request: Request) -> tuple[StreamingCard | None, Response | None, Any]:
        if not self._token_ok(request):
            return None, self._err(request, 99991663, "Invalid access token", 400), None
        card = self.cards.get(request.path_params["card_id"])
        if card is None:
            return None, self._err(request, 300313, "card not found", 400), None
        body = await request.json()
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or sequence <= card.sequence:
            return None, self._err(request, 300317, "sequence number compare failed", 400), None
        if not self.card_limit.allow(request.path_params["card_id"]):
            self.errors.append((request.url.path, 99991400))
            return (
                None,
                JSONResponse(
                    {"code": 99991400, "msg": "request trigger frequency limit"},
                    status_code=429,
                    headers={"x-ogw-ratelimit-reset": "1"},
                ),
                None,
            )
        card.sequence = sequence
        return card, None, body

    async def _card_content(self, request: Request) -> Response:
        if refused := self._over_quota(request, "cardkit.card.element.content"):
            return refused
        card, refused, body = await self._card_op(request)
        if card is None:
            assert refused is not None
            return refused
        element = request.path_params["element_id"]
        if element not in card.elements:
            return self._err(request, 300313, "element not found", 400)
        if not card.streaming:
            return self._err(request, 300309, "streaming mode is closed", 400)
        card.elements[element] = body["content"]
        card.ops.append((time.monotonic(), card.sequence, "content"))
        self._notify()
        return JSONResponse({"code": 0, "msg": "success", "data": {}})

    async def _card_settings(self, request: Request) -> Response:
        if refused := self._over_quota(request, "cardkit.card.settings"):
            return refused
        card, refused, body = await self._card_op(request)
        if card is None:
            assert refused is not None
            return refused
        settings = json.loads(body.get("settings", "{}"))
        card.streaming = bool(settings.get("config", {}).get("streaming_mode", card.streaming))
        card.ops.append((time.monotonic(), card.sequence, "settings"))
        self._notify()
        return JSONResponse({"code": 0, "msg": "success", "data": {}})

    def _err(self, request: Request, code: int, msg: str, status: int = 200) -> Response:
        self.errors.append((request.url.path, code))
        return JSONResponse({"code": code, "msg": msg}, status_code=status)

    async def _answer(self, injected: Injected) -> Response:
        if injected.stall_s:
            await asyncio.sleep(injected.stall_s)
        return JSONResponse(
            injected.body or {"code": 0, "msg": "success", "data": {}}, status_code=injected.status
        )


def _shared(card: dict[str, Any]) -> bool:
    """A shared card (``config.update_multi: true``); CardKit and template references count as
    shared (their config lives in the card entity or the template)."""
    if card.get("type") in ("template", "card"):
        return True
    config = card.get("config")
    return isinstance(config, dict) and config.get("update_multi") is True
