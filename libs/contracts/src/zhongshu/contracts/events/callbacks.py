"""The delivery log of subscriptions (async notifications): every signed POST of a task or run
event to a subscriber's callback URL, on `delivery.<status>.callback.<tenant>`."""

from typing import ClassVar

from zhongshu.contracts.events.base import AwareDatetime, Event


class CallbackDelivered(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The subscriber's URL answered 2xx to a signed POST of one event."""

    TYPE: ClassVar[str] = "zhongshu.callback.callback_delivered.v1"

    subscription_id: str
    tenant: str
    event_id: str
    """The envelope id of the event that was posted (the receiver's idempotency key)."""
    event_type: str
    status_code: int
    attempts: int = 1
    delivered_at: AwareDatetime


class CallbackDeliveryFailed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A callback that kept failing (or was refused) and will not be retried."""

    TYPE: ClassVar[str] = "zhongshu.callback.callback_delivery_failed.v1"

    subscription_id: str
    tenant: str
    event_id: str
    event_type: str
    reason: str
    status_code: int | None = None
    attempts: int = 1
