"""What a card click is answered with, pure: Feishu shows the answer's toast at once, while the
click's real effect follows over the bus. An alert card's button is answered here from the
live configuration and the watched grants (is the user one of the app's admins?); the router
checks again and stays the one that decides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zhongshu.contracts.events import CardActionReceived, Sender
from zhongshu.contracts.events.alerts import ALERT_ACTIONS, CARD_VALUE_KEY

RECEIVED = {
    "en_us": "Received: {action}. The card shows the alert's new state shortly.",
    "zh_cn": "已收到：{action}。卡片稍后会显示告警的新状态。",
}
NOT_ADMIN = {
    "en_us": "Only this app's admins can handle alerts",
    "zh_cn": "只有本应用的管理员可以处理告警",
}
UNKNOWN_ACTION = {
    "en_us": "This alert button is not known (an old card?)",
    "zh_cn": "无法识别的告警按钮（旧卡片？）",
}


def _nobody(ids: frozenset[str]) -> bool:
    return False


@dataclass(frozen=True)
class AlertHandlers:
    """Who may press an app's alert buttons: its admins, listed or granted, unless denied (as
    the router says)."""

    admins: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    granted_admin: Callable[[frozenset[str]], bool] = _nobody
    """Whether one of a user's ids holds a granted `admin` in the app (a memory look-up)."""

    def allow(self, user: Sender) -> bool:
        ids = frozenset(i for i in (user.id, user.open_id, user.union_id, user.user_id) if i)
        return bool(ids & self.admins or self.granted_admin(ids)) and not ids & self.deny


def card_answer(
    event: CardActionReceived, handlers: AlertHandlers, default: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON to answer a card click with: a toast for an alert card's button, else
    ``default`` (the configured answer)."""
    if not event.action.get(CARD_VALUE_KEY):
        return dict(default)
    action = event.action.get("op")
    if not handlers.allow(event.user):
        return toast("error", NOT_ADMIN)
    if action not in ALERT_ACTIONS:
        return toast("warning", UNKNOWN_ACTION)
    return toast("info", {lang: text.format(action=action) for lang, text in RECEIVED.items()})


def toast(kind: str, texts: Mapping[str, str]) -> dict[str, Any]:
    """A Feishu card-callback toast; ``content`` is the English text, ``i18n`` both."""
    return {"toast": {"type": kind, "content": texts["en_us"], "i18n": dict(texts)}}
