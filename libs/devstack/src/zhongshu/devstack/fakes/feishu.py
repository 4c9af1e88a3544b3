"""A fake Feishu open platform that pushes events to a webhook exactly as Feishu does: JSON
envelopes (schema 2.0), optionally AES-256-CBC encrypted with the Encrypt Key, signed with
``X-Lark-Signature``, and re-pushed on failure (15 s, 5 min, 1 h, 6 h; compressible for tests).

    async with FeishuEventSender(base_url, "acme-feishu", encrypt_key="k", verification_token="t")
            as feishu:
        delivery = await feishu.send(feishu.message(text="hello"))
        assert delivery.response.status_code == 200

Its crypto is written here on purpose rather than imported from the service: the fake is an
independent implementation of the platform, so a bug in one shows up against the other."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI

RETRY_DELAYS_S: tuple[float, ...] = (15, 300, 3600, 6 * 3600)
"""Feishu re-pushes an event not answered 200 within 3 s after these delays."""
ACK_DEADLINE_S = 3.0


@dataclass(frozen=True)
class User:
    """A Feishu user (or bot) as ids and a display name."""

    name: str
    open_id: str = field(default_factory=lambda: "ou_" + uuid.uuid4().hex)
    union_id: str = field(default_factory=lambda: "on_" + uuid.uuid4().hex)
    user_id: str | None = None

    def ids(self) -> dict[str, Any]:
        ids: dict[str, Any] = {"open_id": self.open_id, "union_id": self.union_id}
        ids["user_id"] = self.user_id or ""
        return ids


@dataclass
class Delivery:
    """Every push of one event: the first and each re-push."""

    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def response(self) -> httpx.Response:
        return self.responses[-1]

    @property
    def acknowledged(self) -> bool:
        return bool(self.responses) and self.response.status_code == 200


def encrypt(encrypt_key: str, plaintext: bytes) -> str:
    """base64(iv ‖ AES-256-CBC(SHA-256(key), iv, PKCS#7(plaintext))) with a random iv."""
    iv = os.urandom(16)
    pad = 16 - len(plaintext) % 16
    key = hashlib.sha256(encrypt_key.encode()).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(
        iv + encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    ).decode()


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def sign_legacy_card(timestamp: str, nonce: str, verification_token: str, body: bytes) -> str:
    return hashlib.sha1((timestamp + nonce + verification_token).encode() + body).hexdigest()


class FeishuEventSender:
    """Feishu pushing events for one app to ``{base_url}/webhooks/feishu/{app}/…``."""

    def __init__(
        self,
        base_url: str,
        app: str,
        *,
        encrypt_key: str | None = None,
        verification_token: str | None = None,
        app_id: str = "cli_fake0000000000",
        tenant_key: str = "tenant_fake",
        bot: User | None = None,
        time_scale: float = 1.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url, self.app = base_url.rstrip("/"), app
        self.encrypt_key, self.verification_token = encrypt_key, verification_token
        self.app_id, self.tenant_key = app_id, tenant_key
        self.bot = bot or User("Fake Bot")
        self.time_scale = time_scale  # 0.001 turns 6 h of retries into 22 s
        self._client = client or httpx.AsyncClient(timeout=10)

    async def __aenter__(self) -> FeishuEventSender:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ payloads

    def envelope(
        self, event_type: str, event: dict[str, Any], *, event_id: str = ""
    ) -> dict[str, Any]:
        """A schema 2.0 envelope around ``event``."""
        return {
            "schema": "2.0",
            "header": {
                "event_id": event_id or uuid.uuid4().hex,
                "event_type": event_type,
                "create_time": str(int(time.time() * 1000)),
                "token": self.verification_token or "",
                "app_id": self.app_id,
                "tenant_key": self.tenant_key,
            },
            "event": event,
        }

    def message(
        self,
        text: str = "hello",
        *,
        chat_type: str = "p2p",
        mentions: Sequence[User] = (),
        sender: User | None = None,
        chat_id: str = "",
        message_type: str = "text",
        content: dict[str, Any] | None = None,
        message_id: str = "",
        event_id: str = "",
        root_id: str = "",
        parent_id: str = "",
        thread_id: str = "",
    ) -> dict[str, Any]:
        """``im.message.receive_v1``. Each of ``mentions`` becomes an ``@_user_N`` placeholder
        in front of ``text`` (unless ``text`` places them itself)."""
        keys = [f"@_user_{n}" for n in range(1, len(mentions) + 1)]
        if message_type == "text" and content is None:
            placed = text if "@_user_" in text else " ".join([*keys, text])
            content = {"text": placed}
        sender = sender or User("Li Lei")
        message: dict[str, Any] = {
            "message_id": message_id or "om_" + uuid.uuid4().hex,
            "root_id": root_id,
            "parent_id": parent_id,
            "create_time": str(int(time.time() * 1000)),
            "update_time": str(int(time.time() * 1000)),
            "chat_id": chat_id or "oc_" + uuid.uuid4().hex,
            "thread_id": thread_id,
            "chat_type": chat_type,
            "message_type": message_type,
            "content": json.dumps(content or {}, ensure_ascii=False),
            "mentions": [
                {"key": key, "id": user.ids(), "name": user.name, "tenant_key": self.tenant_key}
                for key, user in zip(keys, mentions, strict=True)
            ],
            "user_agent": "Mozilla/5.0 (Macintosh) Lark/7.30.5",
        }
        event = {
            "sender": {
                "sender_id": sender.ids(),
                "sender_type": "user",
                "tenant_key": self.tenant_key,
            },
            "message": message,
        }
        return self.envelope("im.message.receive_v1", event, event_id=event_id)

    def card_action(
        self,
        value: dict[str, Any],
        *,
        user: User | None = None,
        chat_id: str = "",
        message_id: str = "",
        tag: str = "button",
    ) -> dict[str, Any]:
        """``card.action.trigger`` (card callback 2.0)."""
        user = user or User("Li Lei")
        event = {
            "operator": {**user.ids(), "tenant_key": self.tenant_key},
            "token": "c-" + uuid.uuid4().hex,
            "action": {"value": value, "tag": tag},
            "host": "im_message",
            "context": {
                "open_message_id": message_id or "om_" + uuid.uuid4().hex,
                "open_chat_id": chat_id or "oc_" + uuid.uuid4().hex,
            },
        }
        return self.envelope("card.action.trigger", event)

    async def click(
        self,
        openapi: FakeFeishuOpenAPI,
        chat_id: str,
        label: str,
        *,
        user: User | None = None,
        **options: Any,
    ) -> Delivery:
        """``user`` clicks the button ``label`` of the newest card in ``chat_id`` that shows
        one (as the fake open platform holds it): the signed ``card.action.trigger`` Feishu
        posts to the card callback URL, with the button's value."""
        message_id, button = openapi.button(chat_id, label)
        if button.value is None:
            raise ValueError(f"button {label!r} opens a URL; it does not call back")
        payload = self.card_action(button.value, user=user, chat_id=chat_id, message_id=message_id)
        return await self.send(payload, path="cards", **options)

    def legacy_card_action(
        self, value: dict[str, Any], *, user: User | None = None, chat_id: str = ""
    ) -> dict[str, Any]:
        """The older card callback (no envelope; ``token`` is the card's update token)."""
        user = user or User("Li Lei")
        return {
            "open_id": user.open_id,
            "user_id": user.user_id or "",
            "open_message_id": "om_" + uuid.uuid4().hex,
            "open_chat_id": chat_id or "oc_" + uuid.uuid4().hex,
            "tenant_key": self.tenant_key,
            "token": "c-" + uuid.uuid4().hex,
            "action": {"value": value, "tag": "button"},
        }

    def challenge(self, challenge: str = "") -> dict[str, Any]:
        """The url_verification handshake Feishu sends when the URL is saved."""
        return {
            "challenge": challenge or uuid.uuid4().hex,
            "token": self.verification_token or "",
            "type": "url_verification",
        }

    # ------------------------------------------------------------------ the wire

    def encode(
        self,
        payload: dict[str, Any],
        *,
        encrypted: bool = True,
        signed: bool = True,
        timestamp: int | None = None,
        legacy_card: bool = False,
    ) -> tuple[bytes, dict[str, str]]:
        """The request body and headers of one push. Feishu encrypts and signs only when the
        app has an Encrypt Key, and never signs the url_verification challenge; the older card
        callback is signed with SHA-1 over the Verification Token."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        if encrypted and self.encrypt_key:
            body = json.dumps({"encrypt": encrypt(self.encrypt_key, body)}).encode()
        headers = {"content-type": "application/json; charset=utf-8"}
        if not signed or payload.get("type") == "url_verification":
            return body, headers
        ts, nonce = (
            str(timestamp if timestamp is not None else int(time.time())),
            secrets.token_hex(8),
        )
        if legacy_card and self.verification_token:
            signature = sign_legacy_card(ts, nonce, self.verification_token, body)
        elif self.encrypt_key:
            signature = sign(ts, nonce, self.encrypt_key, body)
        else:
            return body, headers
        headers |= {
            "X-Lark-Request-Timestamp": ts,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": signature,
        }
        return body, headers

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """A raw POST to ``{base_url}/webhooks/feishu/{app}/{path}`` (for malformed input)."""
        url = f"{self.base_url}/webhooks/feishu/{self.app}/{path}"
        return await self._client.post(url, content=body, headers=headers or {})

    async def send(
        self,
        payload: dict[str, Any],
        *,
        encrypted: bool = True,
        path: str = "events",
        retries: int = 0,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
        legacy_card: bool = False,
        timestamp: int | None = None,
    ) -> Delivery:
        """Push ``payload``; while it is not answered 200 within 3 s, re-push it (freshly
        encrypted and signed, as Feishu does) up to ``retries`` times after
        ``retry_delays_s`` × ``time_scale``."""
        delivery = Delivery()
        for attempt in range(retries + 1):
            if attempt:
                delay = retry_delays_s[min(attempt - 1, len(retry_delays_s) - 1)]
                await asyncio.sleep(delay * self.time_scale)
            body, headers = self.encode(
                payload, encrypted=encrypted, legacy_card=legacy_card, timestamp=timestamp
            )
            started = time.monotonic()
            try:
                response = await self.post(path, body, headers)
            except httpx.TransportError:
                continue
            delivery.responses.append(response)
            if response.status_code == 200 and time.monotonic() - started <= ACK_DEADLINE_S:
                break
        return delivery

    async def redeliver(self, payload: dict[str, Any], times: int, **options: Any) -> Delivery:
        """Push the same event ``times`` times regardless of the answers: the platform's
        behaviour when our 200 is lost or late."""
        delivery = Delivery()
        for _ in range(times):
            delivery.responses += (await self.send(payload, **options)).responses
        return delivery
