"""Which cards show an alert, and the state they show: one record per alert key in the
``delivery_state`` bucket (beside the send records, so it lives and survives restarts as they
do), written with the revision read as a fencing token.

A card is added once it is delivered (the platform's message id, or the DingTalk card's
``outTrackId``); a state change is applied once, in order: ``version`` names the last
``AlertStateChanged`` applied, and an older one (a redelivery that lost the race to a newer
change, or the same event stored again) is not drawn over it."""

from __future__ import annotations

from datetime import datetime

import msgspec
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from zhongshu.notifier.domain import record_key


class SentCard(msgspec.Struct, frozen=True, kw_only=True):
    """One card showing an alert: where it is and how the platform names it."""

    platform: str
    app: str
    chat: str
    ref: str
    """Feishu's message id; DingTalk's ``outTrackId``."""
    state: str = "raised"
    status: str = ""
    """What the card showed when it was sent (a change applied meanwhile is drawn over it)."""


class AlertCards(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    cards: tuple[SentCard, ...] = ()
    state: str = "raised"
    status: str = ""
    """The line the cards show about the state (who acknowledged it, until when silenced)."""
    silenced_until: datetime | None = None
    version: tuple[int, int] = (0, 0)
    """The last change applied: (when it happened in µs since the epoch, its JetStream
    sequence). The time orders a change stored again later (the same envelope past the
    duplicate window); the sequence tells a redelivery (equal) from another change."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AlertCards).decode
_ATTEMPTS = 20


class CardsMoved(Exception):
    """The record kept changing under us (many writers at once): retry the message later."""


class AlertCardBook:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @staticmethod
    def _key(alert_key: str) -> str:
        return record_key("alert-cards", alert_key)

    async def read(self, alert_key: str) -> tuple[AlertCards, int]:
        """The record and its revision (0: none yet)."""
        try:
            entry = await self._kv.get(self._key(alert_key))
        except KeyNotFoundError:
            return AlertCards(), 0
        if not entry.value:
            return AlertCards(), 0
        return _decode(entry.value), int(entry.revision or 0)

    async def add(self, alert_key: str, card: SentCard) -> AlertCards:
        """Remember ``card`` (once: the same ref again keeps the first); the record after."""
        for _ in range(_ATTEMPTS):
            record, revision = await self.read(alert_key)
            if any(known.ref == card.ref for known in record.cards):
                return record
            updated = msgspec.structs.replace(record, cards=(*record.cards, card))
            if await self._write(alert_key, updated, revision):
                return updated
        raise CardsMoved(f"the cards of alert {alert_key} keep changing")

    async def apply(
        self,
        alert_key: str,
        *,
        state: str,
        status: str,
        silenced_until: datetime | None,
        version: tuple[int, int],
    ) -> tuple[AlertCards, bool]:
        """Record the state the cards should show: (the record, whether the cards are to be
        redrawn). Not when a newer change was applied already, nor when the cards show this
        already (the watchdog's ``raised`` for the card just sent), nor when a resolved alert is
        raised anew (its old cards stay resolved); the same ``version`` again
        (a redelivery finishing what a crash interrupted) is redrawn, without a write."""
        for _ in range(_ATTEMPTS):
            record, revision = await self.read(alert_key)
            if version < record.version:
                return record, False
            if version == record.version:
                return record, True
            updated = msgspec.structs.replace(
                record, state=state, status=status, silenced_until=silenced_until, version=version
            )
            if await self._write(alert_key, updated, revision):
                # Raised anew after a resolution: the old cards stay resolved (a new one is sent).
                anew = record.state == "resolved" and state == "raised"
                return updated, (record.state, record.status) != (state, status) and not anew
        raise CardsMoved(f"the cards of alert {alert_key} keep changing")

    async def _write(self, alert_key: str, record: AlertCards, revision: int) -> bool:
        key, value = self._key(alert_key), _encode(record)
        try:
            if revision == 0:
                await self._kv.create(key, value)
            else:
                await self._kv.update(key, value, last=revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            return False
        return True
