"""Audit: security-relevant actions, kept longer than anything else on the bus."""

from typing import ClassVar, Final

import msgspec

from zhongshu.contracts.events.base import Event

OUTCOME_SUCCEEDED: Final = "succeeded"
OUTCOME_DENIED: Final = "denied"
OUTCOME_FAILED: Final = "failed"
OUTCOME_AMBIGUOUS: Final = "ambiguous"


class AuditRecorded(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Someone did (or was refused) something that matters for security or accountability:
    a denied chat user, a config push, an API login, an ambiguous send.

    Published on `audit.<tenant>.<kind>` by the service that decided; read by the projector
    into the audit trail.
    """

    TYPE: ClassVar[str] = "zhongshu.audit.audit_recorded.v1"

    actor: str
    """Who: a user id, an API client, or a service name."""
    action: str
    """What, as `<area>.<verb>`: `chat.denied`, `config.pushed`, `delivery.ambiguous`."""
    target: str
    outcome: str
    """`OUTCOME_*` or a newer value."""
    tenant: str
    detail: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
