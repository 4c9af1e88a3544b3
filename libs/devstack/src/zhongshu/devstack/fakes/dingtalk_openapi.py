"""A fake DingTalk open platform for what the notifier calls (protocols §2.4): the OAuth2
access token, the enterprise robot OpenAPI (group and one-to-one), AI cards
(``card/instances/createAndDeliver`` and ``card/streaming``), sessionWebhooks, signed
custom-robot webhooks, and the old-style oapi user look-up (``GET /gettoken`` and ``POST
/topapi/v2/user/get``, for the router's department whitelist: ``set_departments``; an unknown
user answers errcode 60121, more than ``contact_limit`` calls a second errcode 90018).
It checks credentials, tokens and signatures, answers with the real
error codes (HTTP 200 + errcode for webhooks), enforces the per-robot rate limit (20/min by
default → errcode 130101, then a block) and a per-card streaming rate, records every accepted
message in ``deliveries`` and every AI card, with each of its updates, in ``ai_cards``; cards
of the public markdown-and-buttons template are updated with ``PUT /v1.0/card/instances``, and
``card_click`` builds the Stream card callback of a click on one of their buttons::

    async with FakeDingTalkOpenAPI(app_key="ding-app", app_secret="s", robot_code="ding-robot",
                                   robots={"robot-token": "SECxxx"}) as fake:
        # DINGTALK_API_URL = DINGTALK_OAPI_URL = fake.base_url
        url, expires_at = fake.session_webhook("cid-group")
        fake.set_departments("staff-1", 1, 42)  # what /topapi/v2/user/get answers

The AI-card answers follow the OpenAPI's shape (``{"success": true, "result": …}``, errors as
HTTP 4xx with a ``code``); DingTalk publishes no per-card streaming limit, so ``card_rate``
(10 updates/s, CardKit's number) is the fake's assumption.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zhongshu.devstack.fakes.base_openapi import FakeServer, Injected, SlidingWindow

MAX_TEXT_BYTES = 20_000
SIGN_MAX_SKEW_MS = 60 * 60 * 1000
OPEN_SPACE = re.compile(r"^dtv1\.card//(IM_GROUP|IM_ROBOT)\.(.+)$", re.IGNORECASE)
QPS_LIMIT_CODE = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"
BUTTON_CARD_TEMPLATE = "1366a1eb-bc54-4859-ac88-517c56a9acb1.schema"
"""DingTalk's public markdown-and-buttons template (its Stream SDK's MarkdownButtonCard)."""


def robot_sign(secret: str, timestamp_ms: int | str) -> str:
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


@dataclass
class DingTalkDelivery:
    channel: str
    """``session``, ``group``, ``oto``, ``robot``, or ``card-group`` / ``card-oto`` (an AI
    card created and delivered; its updates are in ``ai_cards``)."""
    target: str
    """Conversation id, session id, staff ids (comma-joined) or robot access token."""
    msgtype: str
    content: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        c = self.content
        return str(c.get("content") or c.get("text") or "")


@dataclass
class AICardUpdate:
    """One accepted ``PUT /v1.0/card/streaming``."""

    guid: str
    key: str
    content: str
    is_full: bool
    is_finalize: bool
    is_error: bool
    at: float = field(default_factory=time.monotonic)


@dataclass
class AICard:
    """A card instance: where it was delivered, its variables now, and every update (streamed
    ones in ``updates``, ``PUT /v1.0/card/instances`` ones in ``data_updates``)."""

    template_id: str
    space_type: str
    """``IM_GROUP`` or ``IM_ROBOT``."""
    space_id: str
    """The group's conversation id or the user's staff id."""
    params: dict[str, str]
    updates: list[AICardUpdate] = field(default_factory=list)
    callback_type: str | None = None
    """``STREAM``: button clicks go to the app's Stream connection (else to an HTTP callback
    route, which the fake does not model: no click can be pushed)."""
    data_updates: list[dict[str, str]] = field(default_factory=list)

    @property
    def finalized(self) -> bool:
        return any(u.is_finalize for u in self.updates)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The ``msgButtons`` of a card of the markdown-and-buttons template."""
        raw = self.params.get("sys_full_json_obj")
        buttons = json.loads(raw).get("msgButtons") if raw else None
        return list(buttons) if isinstance(buttons, list) else []

    @property
    def labels(self) -> list[str]:
        return [str(b.get("text", "")) for b in self.buttons]


class FakeDingTalkOpenAPI(FakeServer):
    def __init__(
        self,
        *,
        app_key: str = "ding-app",
        app_secret: str = "ding-app-secret",
        robot_code: str = "ding-robot",
        robots: dict[str, str | None] | None = None,
        robot_limit: int = 20,
        robot_window_s: float = 60.0,
        block_s: float = 600.0,
        token_lifetime_s: int = 7200,
        card_templates: dict[str, tuple[str, ...]] | None = None,
        card_rate: int = 10,
        card_window_s: float = 1.0,
        contact_limit: int = 20,
    ) -> None:
        self.app_key, self.app_secret, self.robot_code = app_key, app_secret, robot_code
        self.contacts: dict[str, tuple[int, ...]] = {}  # staff id → dept_id_list
        self.names: dict[str, str] = {}  # staff id → name
        self.contact_requests: list[str] = []  # staff ids asked for, refused calls included
        # DingTalk limits an internal app to about 20 calls/s per API (assumed, UNCONFIRMED).
        self.contact_limit = SlidingWindow(contact_limit, 1.0)
        self.oapi_tokens: dict[str, float] = {}  # old-style access_token → expiry (monotonic)
        # template id → its variables (what cardParamMap and streaming keys may name)
        self.card_templates = dict(
            card_templates
            or {
                "ai-card-template.schema": ("content", "flowStatus"),
                BUTTON_CARD_TEMPLATE: ("title", "logo", "markdown", "tips", "sys_full_json_obj"),
            }
        )
        self.card_limit = SlidingWindow(card_rate, card_window_s)
        self.ai_cards: dict[str, AICard] = {}  # outTrackId → card
        self.robots = dict(robots or {})  # access token → secret (None: no signing)
        self.robot_limit = SlidingWindow(robot_limit, robot_window_s)
        self.block_s = block_s
        self.blocked_until: dict[str, float] = {}
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}  # access token → expiry (monotonic)
        self.token_requests = 0
        self.sessions: dict[str, tuple[str, datetime]] = {}  # session id → (conversation, exp)
        self.deliveries: list[DingTalkDelivery] = []
        self.errors: list[tuple[str, Any]] = []  # (path, errcode/code) of every refused call
        super().__init__(
            [
                Route("/v1.0/oauth2/accessToken", self._token, methods=["POST"]),
                Route("/v1.0/robot/groupMessages/send", self._group, methods=["POST"]),
                Route("/v1.0/robot/oToMessages/batchSend", self._oto, methods=["POST"]),
                Route("/v1.0/card/instances/createAndDeliver", self._create_card, methods=["POST"]),
                Route("/v1.0/card/streaming", self._stream_card, methods=["PUT"]),
                Route("/v1.0/card/instances", self._update_card, methods=["PUT"]),
                Route("/robot/send", self._robot, methods=["POST"]),
                Route("/robot/sendBySession", self._session, methods=["POST"]),
                Route("/gettoken", self._oapi_token, methods=["GET"]),
                Route("/topapi/v2/user/get", self._user_get, methods=["POST"]),
            ]
        )

    # --- what tests use -------------------------------------------------------------------

    def session_webhook(
        self, conversation_id: str, *, expires_in_s: float = 90 * 60
    ) -> tuple[str, datetime]:
        """A sessionWebhook as DingTalk hands out with a callback: (url, expiry)."""
        session = uuid.uuid4().hex
        expires = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        self.sessions[session] = (conversation_id, expires)
        return f"{self.base_url}/robot/sendBySession?session={session}", expires

    def cards_in(self, space_id: str) -> list[str]:
        """The outTrackIds of the cards delivered to a group (conversation id) or a user's
        robot chat (staff id), oldest first."""
        return [t for t, card in self.ai_cards.items() if card.space_id == space_id]

    def card_click(
        self, space_id: str, label: str, staff_id: str, *, corp_id: str = "ding-corp"
    ) -> dict[str, Any]:
        """The card callback DingTalk pushes (Stream topic ``/v1.0/card/instances/callback``)
        when ``staff_id`` clicks the button ``label`` of the newest card in ``space_id`` showing
        it: the button's ``id`` in ``actionIds`` and its ``params`` in ``cardPrivateData``."""
        for out_track_id in reversed(self.cards_in(space_id)):
            card = self.ai_cards[out_track_id]
            for button in card.buttons:
                if button.get("text") != label:
                    continue
                if card.callback_type != "STREAM" or not button.get("request"):
                    raise ValueError(f"button {label!r} does not call back over Stream mode")
                private = {"actionIds": [button.get("id", "")], "params": button.get("params", {})}
                return {
                    "outTrackId": out_track_id,
                    "corpId": corp_id,
                    "userId": staff_id,
                    "userIdType": 1,
                    "type": "actionCallback",
                    "spaceType": "IM" if card.space_type == "IM_GROUP" else "IM_ROBOT",
                    "spaceId": space_id,
                    "content": json.dumps({"cardPrivateData": private}, ensure_ascii=False),
                }
        raise KeyError(f"no card in {space_id} shows a button {label!r}")

    def set_departments(self, staff_id: str, *dept_ids: int, name: str = "") -> None:
        """Put a user in the contacts, in these departments (numeric ids, as DingTalk's), with
        ``name``."""
        self.contacts[staff_id] = dept_ids
        if name:
            self.names[staff_id] = name

    @property
    def rate_limit_errors(self) -> int:
        return sum(1 for _, code in self.errors if code == 130101)

    def delivered_to(self, channel: str) -> list[DingTalkDelivery]:
        return [d for d in self.deliveries if d.channel == channel]

    # --- endpoints ------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        body = await request.json()
        self.token_requests += 1
        if body.get("appKey") != self.app_key or body.get("appSecret") != self.app_secret:
            return JSONResponse(
                {"code": "invalidClientIdOrSecret", "message": "无效的clientId或者clientSecret"},
                status_code=400,
            )
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        return JSONResponse({"accessToken": token, "expireIn": self.token_lifetime_s})

    def _token_ok(self, request: Request) -> bool:
        expiry = self.tokens.get(request.headers.get("x-acs-dingtalk-access-token", ""))
        return expiry is not None and expiry > time.monotonic()

    async def _api_send(self, request: Request, channel: str) -> Response:
        if not self._token_ok(request):
            self.errors.append((request.url.path, "InvalidAuthentication"))
            return JSONResponse(
                {"code": "InvalidAuthentication", "message": "不合法的access_token"},
                status_code=401,
            )
        body = await request.json()
        if body.get("robotCode") != self.robot_code:
            self.errors.append((request.url.path, "robot.notExist"))
            return JSONResponse(
                {"code": "resource.not.found", "message": "robot 不存在"}, status_code=400
            )
        param = body.get("msgParam", "")
        if len(param.encode()) > 15_000:
            self.errors.append((request.url.path, "msgParam.tooLong"))
            return JSONResponse({"code": "param.tooLong", "message": "msgParam"}, status_code=400)
        target = body.get("openConversationId") or ",".join(body.get("userIds", []))
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        self._record(channel, target, body.get("msgKey", ""), json.loads(param or "{}"))
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"processQueryKey": uuid.uuid4().hex})

    async def _group(self, request: Request) -> Response:
        return await self._api_send(request, "group")

    async def _oto(self, request: Request) -> Response:
        return await self._api_send(request, "oto")

    # --- AI cards -------------------------------------------------------------------------

    async def _create_card(self, request: Request) -> Response:
        if not self._token_ok(request):
            return self._api_err(request, 401, "InvalidAuthentication", "不合法的access_token")
        body = await request.json()
        template = body.get("cardTemplateId")
        if template not in self.card_templates:
            return self._api_err(request, 400, "param.cardTemplateId", "卡片模板不存在")
        out_track_id = body.get("outTrackId")
        if not isinstance(out_track_id, str) or not out_track_id:
            return self._api_err(request, 400, "param.outTrackId", "outTrackId 不能为空")
        if out_track_id in self.ai_cards:
            return self._api_err(request, 400, "param.outTrackId.duplicate", "outTrackId 重复")
        params = (body.get("cardData") or {}).get("cardParamMap")
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            return self._api_err(request, 400, "param.cardParamMap", "参数值必须是字符串")
        unknown = set(params) - set(self.card_templates[template])
        if unknown:
            return self._api_err(request, 400, "param.cardParamMap", f"未知变量 {unknown}")
        space = OPEN_SPACE.match(str(body.get("openSpaceId", "")))
        if space is None:
            return self._api_err(request, 400, "param.openSpaceId", "openSpaceId 格式错误")
        space_type, space_id = space.group(1).upper(), space.group(2)
        if space_type == "IM_GROUP":
            deliver = body.get("imGroupOpenDeliverModel") or {}
            if deliver.get("robotCode") != self.robot_code:
                return self._api_err(request, 400, "param.robotCode", "robot 不存在")
        else:
            deliver = body.get("imRobotOpenDeliverModel") or {}
            if deliver.get("spaceType") != "IM_ROBOT":
                return self._api_err(request, 400, "param.spaceType", "spaceType 必须是 IM_ROBOT")
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        callback_type = body.get("callbackType")
        if callback_type not in (None, "STREAM", "HTTP"):
            return self._api_err(request, 400, "param.callbackType", "callbackType 取值错误")
        self.ai_cards[out_track_id] = AICard(
            str(template), space_type, space_id, dict(params), callback_type=callback_type
        )
        channel = "card-group" if space_type == "IM_GROUP" else "card-oto"
        self._record(channel, space_id, "aiCard", dict(params))
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        carrier = uuid.uuid4().hex
        return JSONResponse(
            {
                "success": True,
                "result": {
                    "outTrackId": out_track_id,
                    "deliverResults": [
                        {
                            "spaceType": space_type,
                            "spaceId": space_id,
                            "success": True,
                            "carrierId": carrier,
                        }
                    ],
                },
            }
        )

    async def _stream_card(self, request: Request) -> Response:
        if not self._token_ok(request):
            return self._api_err(request, 401, "InvalidAuthentication", "不合法的access_token")
        body = await request.json()
        card = self.ai_cards.get(str(body.get("outTrackId", "")))
        if card is None:
            return self._api_err(request, 404, "cardInstance.notFound", "卡片实例不存在")
        guid, key, content = body.get("guid"), body.get("key"), body.get("content")
        if not isinstance(guid, str) or not guid:
            return self._api_err(request, 400, "param.guid", "guid 不能为空")
        if key not in self.card_templates[card.template_id]:
            return self._api_err(request, 400, "param.key", f"模板没有变量 {key}")
        if not isinstance(content, str):
            return self._api_err(request, 400, "param.content", "content 必须是字符串")
        flags = {name: body.get(name) for name in ("isFull", "isFinalize", "isError")}
        if not all(isinstance(flag, bool) for flag in flags.values()):
            return self._api_err(request, 400, "param.flags", "isFull/isFinalize/isError")
        if not self.card_limit.allow(str(body["outTrackId"])):
            return self._api_err(request, 403, QPS_LIMIT_CODE, "请求太频繁")
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        full, finalize, error = flags["isFull"], flags["isFinalize"], flags["isError"]
        card.params[key] = content if full else card.params.get(key, "") + content
        card.updates.append(
            AICardUpdate(guid, key, content, bool(full), bool(finalize), bool(error))
        )
        self._notify()
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"success": True, "result": True})

    async def _update_card(self, request: Request) -> Response:
        """``PUT /v1.0/card/instances``: the card's variables replaced, by key when
        ``cardUpdateOptions.updateCardDataByKey`` (else the whole map)."""
        if not self._token_ok(request):
            return self._api_err(request, 401, "InvalidAuthentication", "不合法的access_token")
        body = await request.json()
        out_track_id = str(body.get("outTrackId", ""))
        card = self.ai_cards.get(out_track_id)
        if card is None:
            return self._api_err(request, 404, "cardInstance.notFound", "卡片实例不存在")
        params = (body.get("cardData") or {}).get("cardParamMap")
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            return self._api_err(request, 400, "param.cardParamMap", "参数值必须是字符串")
        unknown = set(params) - set(self.card_templates[card.template_id])
        if unknown:
            return self._api_err(request, 400, "param.cardParamMap", f"未知变量 {unknown}")
        if not self.card_limit.allow(out_track_id):
            return self._api_err(request, 403, QPS_LIMIT_CODE, "请求太频繁")
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        by_key = bool((body.get("cardUpdateOptions") or {}).get("updateCardDataByKey"))
        card.params = {**card.params, **params} if by_key else dict(params)
        card.data_updates.append(dict(params))
        self._notify()
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"success": True, "result": True})

    def _api_err(self, request: Request, status: int, code: str, message: str) -> Response:
        self.errors.append((request.url.path, code))
        return JSONResponse({"code": code, "message": message}, status_code=status)

    # --- oapi contacts ---------------------------------------------------------------------

    async def _oapi_token(self, request: Request) -> Response:
        """``GET /gettoken?appkey=…&appsecret=…``: the old-style token, for oapi calls."""
        self.token_requests += 1
        query = request.query_params
        if query.get("appkey") != self.app_key or query.get("appsecret") != self.app_secret:
            # The errcode DingTalk gives for a wrong appkey/appsecret pair (UNCONFIRMED).
            return self._err(request, 40089, "不合法的corpid或corpsecret")
        token = uuid.uuid4().hex
        self.oapi_tokens[token] = time.monotonic() + self.token_lifetime_s
        return JSONResponse(
            {
                "errcode": 0,
                "errmsg": "ok",
                "access_token": token,
                "expires_in": self.token_lifetime_s,
            }
        )

    async def _user_get(self, request: Request) -> Response:
        """``POST /topapi/v2/user/get?access_token=…`` ``{"userid": staff id}``; errors are HTTP
        200 with an errcode."""
        body = await request.json()
        staff_id = str(body.get("userid", ""))
        self.contact_requests.append(staff_id)
        expiry = self.oapi_tokens.get(request.query_params.get("access_token", ""))
        if expiry is None or expiry <= time.monotonic():
            return self._err(request, 40014, "不合法的access_token")
        if not staff_id:
            return self._err(request, 400002, "无效的参数")
        if not self.contact_limit.allow(self.app_key):
            return self._err(request, 90018, "当前企业调用该接口的QPS超过了限制")
        injected = self.next_injected()
        if injected:
            return await self._answer(injected)
        departments = self.contacts.get(staff_id)
        if departments is None:
            return self._err(request, 60121, "找不到该用户")
        return JSONResponse(
            {
                "errcode": 0,
                "errmsg": "ok",
                "request_id": uuid.uuid4().hex[:12],
                "result": {
                    "userid": staff_id,
                    "dept_id_list": list(departments),
                    **({"name": self.names[staff_id]} if staff_id in self.names else {}),
                },
            }
        )

    # --- webhooks ---------------------------------------------------------------------------

    async def _robot(self, request: Request) -> Response:
        token = request.query_params.get("access_token", "")
        if not token:
            return self._err(request, 40035, "缺少参数 access_token")
        if token not in self.robots:
            return self._err(request, 300005, "token is not exist")
        secret = self.robots[token]
        if secret is not None:
            timestamp = request.query_params.get("timestamp", "")
            sign = request.query_params.get("sign", "")
            if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > (
                SIGN_MAX_SKEW_MS
            ):
                return self._err(request, 310000, "invalid timestamp")
            if not hmac.compare_digest(sign, robot_sign(secret, timestamp)):
                return self._err(request, 310000, "sign not match")
        return await self._webhook(request, "robot", token, key=f"robot:{token}")

    async def _session(self, request: Request) -> Response:
        session = self.sessions.get(request.query_params.get("session", ""))
        if session is None or session[1] <= datetime.now(UTC):
            return self._err(request, 300001, "session webhook expired")
        return await self._webhook(request, "session", session[0], key=f"session:{session[0]}")

    async def _webhook(self, request: Request, channel: str, target: str, *, key: str) -> Response:
        body = await request.json()
        if self.blocked_until.get(key, 0) > time.monotonic():
            return self._err(request, 130101, "send too fast, exceed 20 times per minute")
        if not self.robot_limit.allow(key):
            self.blocked_until[key] = time.monotonic() + self.block_s
            return self._err(request, 130101, "send too fast, exceed 20 times per minute")
        if len(json.dumps(body, ensure_ascii=False).encode()) > MAX_TEXT_BYTES + 1_000:
            return self._err(request, 460101, "message too long, exceed 20000 bytes")
        msgtype = body.get("msgtype", "")
        content = body.get(msgtype)
        if not isinstance(content, dict):
            return self._err(request, 40035, "msgtype body missing")
        injected = self.next_injected()
        if injected and not injected.after_effect:
            return await self._answer(injected)
        self._record(channel, target, msgtype, content)
        if injected:
            return await self._answer(injected)
        await asyncio.sleep(self.answer_delay_s)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    # --- plumbing -------------------------------------------------------------------------

    def _record(self, channel: str, target: str, msgtype: str, content: dict[str, Any]) -> None:
        self.deliveries.append(DingTalkDelivery(channel, target, msgtype, content))
        self._notify()

    def _err(self, request: Request, code: int, message: str) -> Response:
        self.errors.append((request.url.path, code))
        return JSONResponse({"errcode": code, "errmsg": message})

    async def _answer(self, injected: Injected) -> Response:
        if injected.stall_s:
            await asyncio.sleep(injected.stall_s)
        return JSONResponse(
            injected.body or {"errcode": 0, "errmsg": "ok"}, status_code=injected.status
        )
