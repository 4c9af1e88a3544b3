"""An audit record as the API shows it, with its place in the tenant's hash chain (see
docs/operations/audit.md; `zhongshu audit verify` recomputes the chain)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from zhongshu.gateway.models.common import ApiModel, Page


class AuditEntry(ApiModel):
    """Someone did (or was refused) something that matters for security."""

    at: datetime
    actor: str
    action: str
    target: str = ""
    outcome: str
    detail: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    kind: str
    """The subject's last token: `api`, `config`, `security`, `access`, `delivery` …"""
    event_id: str | None = None
    seq: int
    """The AUDIT stream sequence it was projected from."""
    pos: int | None = None
    """Its position in the tenant's chain (absent for records written before the chain)."""
    prev_hash: str | None = None
    hash: str | None = None


class AuditPage(Page):
    items: list[AuditEntry]
