"""DingTalk sends (protocols §2.4): the per-conversation sessionWebhook, the enterprise robot
OpenAPI (group and one-to-one), AI cards streamed in place, and signed custom-robot webhooks,
through ``zhongshu.platforms.dingtalk`` (the cached access token, fetched again once when
refused; a 200 with ``errcode`` != 0 is an error); every outcome becomes a :mod:`results`
value."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from zhongshu.notifier.adapters.results import Delivered, Rejected, SendResult
from zhongshu.notifier.message import Outgoing
from zhongshu.platforms import Credentials, DingTalkClient
from zhongshu.platforms import dingtalk as platform
from zhongshu.platforms.results import CallResult, Ok

MAX_TEXT_BYTES = 20_000  # 460101 above this
MAX_MSG_PARAM_BYTES = 15_000
_COLOURS = {"yellow": "#D4A017", "orange": "#FF8C00", "red": "#E02020"}
AI_CARD_PROCESSING = "1"  # flowStatus: 1 processing, 2 inputting, 3 finished (set by isFinalize)


@dataclass(frozen=True)
class CardSpace:
    """Where an AI card is delivered: a group conversation, or one user's chat with the robot."""

    conversation_id: str | None = None
    staff_id: str | None = None

    @property
    def open_space_id(self) -> str:
        if self.conversation_id:
            return f"dtv1.card//IM_GROUP.{self.conversation_id}"
        return f"dtv1.card//IM_ROBOT.{self.staff_id}"


def robot_sign(secret: str, timestamp_ms: int) -> str:
    """``sign`` of a custom-robot webhook URL (before URL-encoding)."""
    message = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_body(message: Outgoing) -> dict[str, Any]:
    """The JSON body shared by the sessionWebhook and custom-robot webhooks."""
    at: dict[str, Any] = (
        {"atUserIds": list(message.mention_user_ids)} if message.mention_user_ids else {}
    )
    if message.kind == "card" and message.card is not None:
        return {"msgtype": "actionCard", "actionCard": message.card}
    if message.kind == "card" or message.colour is not None:
        title = message.title or "zhongshu"
        colour = _COLOURS.get(message.colour or "", "")
        heading = f'<font color="{colour}">{title}</font>' if colour else title
        card: dict[str, Any] = {"title": title, "text": f"### {heading}\n\n{message.text}"}
        if message.buttons:
            card["btnOrientation"] = "0"
            card["btns"] = [{"title": t, "actionURL": u} for t, u in message.buttons]
        return {"msgtype": "actionCard", "actionCard": card}
    if message.kind == "markdown":
        body: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {
                "title": message.title or message.text[:20] or "zhongshu",
                "text": message.text,
            },
        }
    else:
        body = {"msgtype": "text", "text": {"content": message.text}}
    if at:
        body["at"] = at
    return body


def openapi_msg(message: Outgoing) -> tuple[str, str]:
    """(msgKey, msgParam) of a robot OpenAPI send."""
    if message.card is not None:
        card = message.card
        param = {
            "title": card.get("title", message.title or "zhongshu"),
            "text": card.get("text", message.text),
            "singleTitle": card.get("singleTitle", ""),
            "singleURL": card.get("singleURL", ""),
        }
        return "sampleActionCard", json.dumps(param, ensure_ascii=False)
    if message.kind == "text" and message.colour is None:
        return "sampleText", json.dumps({"content": message.text}, ensure_ascii=False)
    title = message.title or message.text[:20] or "zhongshu"
    return "sampleMarkdown", json.dumps({"title": title, "text": message.text}, ensure_ascii=False)


BUTTON_CARD_TEMPLATE = "1366a1eb-bc54-4859-ac88-517c56a9acb1.schema"
"""DingTalk's public markdown-and-buttons card template (the one its Stream SDK's
``MarkdownButtonCardInstance`` uses): variables ``title``, ``markdown``, ``tips`` and
``sys_full_json_obj`` (``{"msgButtons": [...]}``)."""
_BUTTON_COLOURS = {"primary": "blue", "danger": "red", "default": "gray"}


def button_card_params(message: Outgoing) -> dict[str, str]:
    """The template's variables (strings, as the card API requires): the title, the text, and
    one callback button per action, whose ``params`` come back in the callback's
    ``cardPrivateData.params`` and whose ``id`` in its ``actionIds``."""
    buttons = [
        {
            "text": action.label,
            "color": _BUTTON_COLOURS[action.style],
            "id": action.value.get("op", action.label),
            "request": True,
            "actionType": "callback",
            "params": dict(action.value),
        }
        for action in message.actions
    ]
    return {
        "title": message.title or "zhongshu",
        "markdown": message.text,
        "sys_full_json_obj": json.dumps({"msgButtons": buttons}, ensure_ascii=False),
    }


def classify_errcode(payload: Any) -> SendResult:
    """An answer of the webhook APIs (HTTP 200 with ``errcode``)."""
    if not isinstance(payload, dict):
        return Rejected("unexpected response body")
    return delivered(platform.classify_errcode(payload))


def delivered(result: CallResult, message_id: str | None = None) -> SendResult:
    return Delivered(message_id) if isinstance(result, Ok) else result


class DingTalkAdapter:
    """Sends for every DingTalk app and robot, over one platform client."""

    platform = "dingtalk"
    # No idempotency key: a send whose outcome is unknown must not be repeated.
    idempotent = False
    max_text_bytes = MAX_TEXT_BYTES

    def __init__(self, dingtalk: DingTalkClient) -> None:
        self._dingtalk = dingtalk

    # --- the three ways to send -------------------------------------------------------

    async def send_session_webhook(self, url: str, message: Outgoing) -> SendResult:
        return delivered(await self._dingtalk.post_webhook(url, webhook_body(message)))

    async def send_custom_robot(
        self, access_token: str, secret: str | None, message: Outgoing
    ) -> SendResult:
        params = {"access_token": access_token}
        if secret:
            timestamp = time.time_ns() // 1_000_000
            params |= {"timestamp": str(timestamp), "sign": robot_sign(secret, timestamp)}
        url = f"{self._dingtalk.oapi_url}/robot/send?{urllib.parse.urlencode(params)}"
        return delivered(await self._dingtalk.post_webhook(url, webhook_body(message)))

    async def send_robot(
        self,
        *,
        app_key: str,
        app_secret: str,
        robot_code: str,
        conversation_id: str | None,
        user_ids: tuple[str, ...] = (),
        message: Outgoing,
    ) -> SendResult:
        """The enterprise robot OpenAPI: a group when ``conversation_id`` is given, else a
        one-to-one batch send to ``user_ids``."""
        msg_key, msg_param = openapi_msg(message)
        if len(msg_param.encode()) > MAX_MSG_PARAM_BYTES:
            return Rejected("msgParam over 15000 bytes", "msgParam", too_long=True)
        body: dict[str, Any] = {"robotCode": robot_code, "msgKey": msg_key, "msgParam": msg_param}
        if conversation_id:
            path = "/v1.0/robot/groupMessages/send"
            body["openConversationId"] = conversation_id
        else:
            path = "/v1.0/robot/oToMessages/batchSend"
            body["userIds"] = list(user_ids)
        result = await self._call(app_key, app_secret, "POST", path, body)
        key = result.payload.get("processQueryKey") if isinstance(result, Ok) else None
        return delivered(result, str(key) if key else None)

    # --- cards with callback buttons (alerts) -----------------------------------------

    async def send_button_card(
        self,
        *,
        app_key: str,
        app_secret: str,
        robot_code: str,
        template_id: str,
        out_track_id: str,
        space: CardSpace,
        message: Outgoing,
    ) -> SendResult:
        """A card of the markdown-and-buttons template whose clicks come back over Stream mode
        (``callbackType: STREAM``, topic ``/v1.0/card/instances/callback``); delivered, it is
        known by ``out_track_id``, which later updates name."""
        result = await self.create_ai_card(
            app_key=app_key,
            app_secret=app_secret,
            robot_code=robot_code,
            template_id=template_id,
            out_track_id=out_track_id,
            space=space,
            params=button_card_params(message),
            callback=True,
        )
        return Delivered(out_track_id) if isinstance(result, Delivered) else result

    async def update_button_card(
        self, *, app_key: str, app_secret: str, out_track_id: str, message: Outgoing
    ) -> SendResult:
        """Redraw a card sent by :meth:`send_button_card` (``PUT /v1.0/card/instances``, its
        variables replaced by key): the same content again is harmless."""
        body = {
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": button_card_params(message)},
            "cardUpdateOptions": {"updateCardDataByKey": True},
        }
        result = await self._call(app_key, app_secret, "PUT", "/v1.0/card/instances", body)
        if isinstance(result, Ok):
            return _card_refusal(result.payload) or Delivered(out_track_id)
        return result

    # --- AI cards (streamed in place) -------------------------------------------------

    async def create_ai_card(
        self,
        *,
        app_key: str,
        app_secret: str,
        robot_code: str,
        template_id: str,
        out_track_id: str,
        space: CardSpace,
        params: dict[str, str],
        callback: bool = False,
    ) -> SendResult:
        """Create a card from ``template_id`` and deliver it to ``space`` in one call. The
        card is known by ``out_track_id`` from then on (streaming addresses it by that);
        ``callback`` sends its button clicks to the app's Stream connection."""
        body: dict[str, Any] = {
            "cardTemplateId": template_id,
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": params},
            "openSpaceId": space.open_space_id,
            "userIdType": 1,  # user ids are staff ids
        }
        if callback:
            body["callbackType"] = "STREAM"
        if space.conversation_id:
            body["imGroupOpenSpaceModel"] = {"supportForward": True}
            body["imGroupOpenDeliverModel"] = {"robotCode": robot_code}
        else:
            body["imRobotOpenSpaceModel"] = {"supportForward": True}
            body["imRobotOpenDeliverModel"] = {"spaceType": "IM_ROBOT", "robotCode": robot_code}
        path = "/v1.0/card/instances/createAndDeliver"
        result = await self._call(app_key, app_secret, "POST", path, body)
        if not isinstance(result, Ok):
            return result
        payload = result.payload
        refused = _card_refusal(payload)
        if refused is not None:
            return refused
        # The card is created even when delivering it fails: each space reports on its own.
        answer = payload.get("result")
        spaces = answer.get("deliverResults") if isinstance(answer, dict) else None
        carrier: str | None = None
        for space_result in spaces if isinstance(spaces, list) else ():
            if not isinstance(space_result, dict):
                continue
            if space_result.get("success") is False:
                reason = f"AI card not delivered: {space_result.get('errorMsg', '')}"
                return Rejected(reason, "deliver")
            if carrier is None and space_result.get("carrierId"):
                carrier = str(space_result["carrierId"])
        return Delivered(carrier or out_track_id)

    async def stream_ai_card(
        self,
        *,
        app_key: str,
        app_secret: str,
        out_track_id: str,
        key: str,
        content: str,
        finalize: bool,
    ) -> SendResult:
        """Replace the card's ``key`` variable with the full text so far (``isFull``), so a
        skipped update costs nothing; ``finalize`` ends the typing (the card shows finished)."""
        body = {
            "outTrackId": out_track_id,
            "guid": uuid.uuid4().hex,  # one per update
            "key": key,
            "content": content,
            "isFull": True,
            "isFinalize": finalize,
            "isError": False,
        }
        result = await self._call(app_key, app_secret, "PUT", "/v1.0/card/streaming", body)
        if isinstance(result, Ok):
            return _card_refusal(result.payload) or Delivered(out_track_id)
        return result

    async def _call(
        self, app_key: str, app_secret: str, method: str, path: str, body: dict[str, Any]
    ) -> CallResult:
        """An OpenAPI call with the app's access token, fetched again once if refused."""
        return await self._dingtalk.call(Credentials(app_key, app_secret), method, path, json=body)


def _card_refusal(payload: Any) -> Rejected | None:
    """The card APIs may answer 200 with ``success: false``."""
    if isinstance(payload, dict) and payload.get("success") is False:
        code = str(payload.get("code") or "card")
        return Rejected(f"AI card refused: {code} {payload.get('message', '')}".strip(), code)
    return None
