"""A fake DingTalk open platform for what the notifier calls (protocols §2.4): the OAuth2
access token, the enterprise robot OpenAPI (group and one-to-one), sessionWebhooks and signed
custom-robot webhooks. It checks credentials, tokens and signatures, answers with the real
error codes (HTTP 200 + errcode for webhooks), enforces the per-robot rate limit (20/min by
default → errcode 130101, then a block) and records every accepted message in ``deliveries``::

    async with FakeDingTalkOpenAPI(app_key="ding-app", app_secret="s", robot_code="ding-robot",
                                   robots={"robot-token": "SECxxx"}) as fake:
        # DINGTALK_API_URL = DINGTALK_OAPI_URL = fake.base_url
        url, expires_at = fake.session_webhook("cid-group")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base_openapi import FakeServer, Injected, SlidingWindow

MAX_TEXT_BYTES = 20_000
SIGN_MAX_SKEW_MS = 60 * 60 * 1000


def robot_sign(secret: str, timestamp_ms: int | str) -> str:
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


@dataclass
class DingTalkDelivery:
    channel: str
    """``session``, ``group``, ``oto`` or ``robot``."""
    target: str
    """Conversation id, session id, staff ids (comma-joined) or robot access token."""
    msgtype: str
    content: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        c = self.content
        return str(c.get("content") or c.get("text") or "")


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
    ) -> None:
        self.app_key, self.app_secret, self.robot_code = app_key, app_secret, robot_code
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
                Route("/robot/send", self._robot, methods=["POST"]),
                Route("/robot/sendBySession", self._session, methods=["POST"]),
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
