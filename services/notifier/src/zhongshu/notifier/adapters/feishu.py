"""Feishu sends (protocols §1.4): the app bot API (reply in thread under the original message,
send to a chat, replace a card the app sent) with a cached ``tenant_access_token``, CardKit
streaming cards, and signed custom-bot webhooks. Every app send carries the reply id as
``uuid``, which Feishu deduplicates for an hour, and a card update sets the same content
again: a resend after a crash is safe."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import httpx

from zhongshu.notifier.adapters.results import (
    Ambiguous,
    Delivered,
    RateLimited,
    Rejected,
    SendResult,
    Unreachable,
)
from zhongshu.notifier.adapters.tokens import TokenCache
from zhongshu.notifier.message import Outgoing

MAX_TEXT_BYTES = 150_000
MAX_CARD_BYTES = 30_000
RATE_LIMIT_CODES = frozenset({99991400, 230020, 11232})
TOO_LONG = 230025
TOKEN_CODES = frozenset({99991663, 99991664, 99991665, 99991666, 99991668})
MAX_UUID = 50
STREAM_ELEMENT = "md_stream"


def custom_bot_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's custom-bot ``sign``: the string-to-sign is the HMAC key, the message empty."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def request_uuid(key: str) -> str:
    """Feishu's ``uuid`` is at most 50 characters: longer keys are hashed."""
    return key if len(key) <= MAX_UUID else hashlib.sha256(key.encode()).hexdigest()[:40]


def card_json(message: Outgoing) -> dict[str, Any]:
    if message.card is not None:
        return message.card
    card: dict[str, Any] = {
        "config": {"wide_screen_mode": True, "update_multi": True},
        "elements": [{"tag": "markdown", "content": message.text}],
    }
    if message.title or message.colour:
        card["header"] = {
            "title": {"tag": "plain_text", "content": message.title or "zhongshu"},
            "template": message.colour or "blue",
        }
    if message.buttons:
        card["elements"].append(
            {
                "tag": "action",
                "actions": [
                    {"tag": "button", "text": {"tag": "plain_text", "content": t}, "url": u}
                    for t, u in message.buttons
                ],
            }
        )
    return card


def shared_card(card: dict[str, Any]) -> dict[str, Any] | Rejected:
    """The card to put in place of another with ``PATCH /im/v1/messages/{id}``: only shared
    cards (``config.update_multi: true``, before and after) can be updated for everyone, so the
    flag is added when the producer left it out; a card that asks for ``false`` is refused
    here rather than by the platform. Template and CardKit references carry no config."""
    if card.get("type") in ("template", "card"):
        return card
    config = card.get("config")
    config = dict(config) if isinstance(config, dict) else {}
    if config.get("update_multi") is False:
        return Rejected("a card update needs config.update_multi: true", "update_multi")
    config["update_multi"] = True
    return {**card, "config": config}


def render(message: Outgoing) -> tuple[str, dict[str, Any]]:
    """(msg_type, content object) for the app API."""
    if message.kind == "card" or message.colour is not None:
        return "interactive", card_json(message)
    if message.kind == "markdown":
        lines = [[{"tag": "md", "text": message.text}]]
        return "post", {"zh_cn": {"title": message.title or "", "content": lines}}
    mentions = "".join(f'<at user_id="{u}"></at> ' for u in message.mention_user_ids)
    return "text", {"text": mentions + message.text}


def classify(response: httpx.Response) -> tuple[SendResult, bool]:
    """(result, whether the token was refused)."""
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    code = payload.get("code", payload.get("StatusCode")) if isinstance(payload, dict) else None
    text = str(payload.get("msg", "")) if isinstance(payload, dict) else ""
    if response.status_code == 429 or code in RATE_LIMIT_CODES:
        reset = response.headers.get("x-ogw-ratelimit-reset", "1")
        try:
            wait = max(0.05, float(reset))
        except ValueError:
            wait = 1.0
        return RateLimited(wait, str(code if code is not None else 429)), False
    if code in TOKEN_CODES:
        return Rejected(f"token refused: {code} {text}", str(code)), True
    if response.status_code >= 500:
        return Ambiguous(f"Feishu answered HTTP {response.status_code}"), False
    if code == 0 and response.status_code == 200:
        data = payload.get("data") or {}
        message_id = data.get("message_id") if isinstance(data, dict) else None
        return Delivered(str(message_id) if message_id else None), False
    if code == TOO_LONG:
        return Rejected(f"content too long: {text}", str(code), too_long=True), False
    return Rejected(f"code {code} (HTTP {response.status_code}): {text}", str(code)), False


class FeishuAdapter:
    platform = "feishu"
    idempotent = True  # the request uuid makes a resend within an hour a no-op
    max_text_bytes = MAX_TEXT_BYTES

    def __init__(self, http: httpx.AsyncClient, tokens: TokenCache, *, base_url: str) -> None:
        self._http = http
        self._tokens = tokens
        self._base = base_url.rstrip("/")

    async def reply(
        self, *, app_id: str, app_secret: str, message_id: str, message: Outgoing
    ) -> SendResult:
        """Reply under the original message (in its thread)."""
        msg_type, content = render(message)
        body = {"msg_type": msg_type, "content": json.dumps(content, ensure_ascii=False)}
        if message.idempotency_key:
            body["uuid"] = request_uuid(message.idempotency_key)
        path = f"/open-apis/im/v1/messages/{message_id}/reply"
        return await self._app_post(app_id, app_secret, path, body)

    async def send_to_chat(
        self, *, app_id: str, app_secret: str, chat_id: str, message: Outgoing
    ) -> SendResult:
        msg_type, content = render(message)
        body = {
            "receive_id": chat_id,
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
        }
        if message.idempotency_key:
            body["uuid"] = request_uuid(message.idempotency_key)
        return await self._app_post(
            app_id, app_secret, "/open-apis/im/v1/messages?receive_id_type=chat_id", body
        )

    async def update_card(
        self, *, app_id: str, app_secret: str, message_id: str, message: Outgoing
    ) -> SendResult:
        """Replace the card of interactive message ``message_id`` (sent by this app within 14
        days, 5 updates/s per message). The card is replaced whole, so an over-long one is
        refused, never split into parts that would overwrite each other."""
        card = shared_card(card_json(message))
        if isinstance(card, Rejected):
            return card
        body = {"content": json.dumps(card, ensure_ascii=False)}
        path = f"/open-apis/im/v1/messages/{message_id}"
        result, _ = await self._app_call(app_id, app_secret, "PATCH", path, body)
        if isinstance(result, Delivered):
            return Delivered(message_id)  # the answer names no message: it is the same one
        if isinstance(result, Rejected) and result.too_long:
            return replace(result, too_long=False)
        return result

    async def send_custom_bot(
        self, hook_token: str, secret: str | None, message: Outgoing
    ) -> SendResult:
        msg_type, content = render(message)
        body: dict[str, Any] = {"msg_type": msg_type}
        body["card" if msg_type == "interactive" else "content"] = content
        if secret:
            timestamp = int(time.time())
            body |= {"timestamp": str(timestamp), "sign": custom_bot_sign(secret, timestamp)}
        url = f"{self._base}/open-apis/bot/v2/hook/{hook_token}"
        result, _ = await self._post(url, body, None)
        return result

    # --- CardKit streaming (typewriter cards) ---------------------------------------------

    async def create_streaming_card(
        self, *, app_id: str, app_secret: str, text: str, title: str | None
    ) -> tuple[str | None, SendResult]:
        """A card 2.0 in streaming mode holding ``text``; (card id, result)."""
        card: dict[str, Any] = {
            "schema": "2.0",
            "config": {"streaming_mode": True, "update_multi": True},
            "body": {
                "elements": [{"tag": "markdown", "element_id": STREAM_ELEMENT, "content": text}]
            },
        }
        if title:
            card["header"] = {"title": {"tag": "plain_text", "content": title}}
        body = {"type": "card_json", "data": json.dumps(card, ensure_ascii=False)}
        result, payload = await self._app_call(
            app_id, app_secret, "POST", "/open-apis/cardkit/v1/cards", body
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        card_id = data.get("card_id") if isinstance(data, dict) else None
        return (str(card_id) if card_id else None), result

    async def stream_text(
        self, *, app_id: str, app_secret: str, card_id: str, text: str, sequence: int
    ) -> SendResult:
        """Replace the streamed element with the full text so far (only the new tail types out)."""
        path = f"/open-apis/cardkit/v1/cards/{card_id}/elements/{STREAM_ELEMENT}/content"
        body = {"content": text, "sequence": sequence}
        result, _ = await self._app_call(app_id, app_secret, "PUT", path, body)
        return result

    async def close_stream(
        self, *, app_id: str, app_secret: str, card_id: str, sequence: int
    ) -> SendResult:
        body = {
            "settings": json.dumps({"config": {"streaming_mode": False}}),
            "sequence": sequence,
        }
        path = f"/open-apis/cardkit/v1/cards/{card_id}/settings"
        result, _ = await self._app_call(app_id, app_secret, "PATCH", path, body)
        return result

    async def _app_call(
        self, app_id: str, app_secret: str, method: str, path: str, body: dict[str, Any]
    ) -> tuple[SendResult, Any]:
        for attempt in range(2):
            try:
                token = await self._tenant_token(app_id, app_secret)
            except httpx.HTTPError as exc:
                return Unreachable(f"Feishu token request failed: {exc!r}"), None
            except _TokenRefused as exc:
                return Rejected(str(exc), exc.code), None
            try:
                response = await self._http.request(
                    method,
                    self._base + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                return Unreachable(f"cannot connect: {exc!r}"), None
            except httpx.HTTPError as exc:
                return Ambiguous(f"no answer from Feishu: {exc!r}"), None
            result, refused = classify(response)
            if refused and attempt == 0:
                await self._tokens.invalidate(f"feishu:{app_id}", token)
                continue
            try:
                payload = response.json()
            except ValueError:
                payload = None
            return result, payload
        return Rejected("tenant_access_token refused twice", "token"), None

    async def _app_post(
        self, app_id: str, app_secret: str, path: str, body: dict[str, Any]
    ) -> SendResult:
        for attempt in range(2):
            try:
                token = await self._tenant_token(app_id, app_secret)
            except httpx.HTTPError as exc:
                return Unreachable(f"Feishu token request failed: {exc!r}")
            except _TokenRefused as exc:
                return Rejected(str(exc), exc.code)
            result, refused = await self._post(self._base + path, body, token)
            if refused and attempt == 0:
                await self._tokens.invalidate(f"feishu:{app_id}", token)
                continue
            return result
        return Rejected("tenant_access_token refused twice", "token")

    async def _post(
        self, url: str, body: dict[str, Any], token: str | None
    ) -> tuple[SendResult, bool]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.post(url, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return Unreachable(f"cannot connect: {exc!r}"), False
        except httpx.HTTPError as exc:
            return Ambiguous(f"no answer from Feishu: {exc!r}"), False
        return classify(response)

    async def _tenant_token(self, app_id: str, app_secret: str) -> str:
        async def fetch() -> tuple[str, float]:
            response = await self._http.post(
                self._base + "/open-apis/auth/v3/tenant_access_token/internal",
                json={"app_id": app_id, "app_secret": app_secret},
            )
            payload = response.json()
            if payload.get("code") != 0 or "tenant_access_token" not in payload:
                raise _TokenRefused(
                    f"Feishu refused the credentials of {app_id}: "
                    f"{payload.get('code')} {payload.get('msg')}",
                    str(payload.get("code")),
                )
            return str(payload["tenant_access_token"]), float(payload.get("expire", 7200))

        return await self._tokens.get(f"feishu:{app_id}", fetch)


class _TokenRefused(Exception):
    def __init__(self, text: str, code: str | None) -> None:
        super().__init__(text)
        self.code = code
