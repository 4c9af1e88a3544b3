"""`GET /api/v1/audit`: the token's tenant's audit trail, newest first, in keyset pages, with the
chain hashes; admin scope only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from services.gateway.tests.gateway_testing import Api
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.projector.projections.audit import AuditProjection
from zhongshu.projector.records import Record
from zhongshu.projector.writer import Planned, apply_batch

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def project(
    warm: asyncpg.Connection, tenant: str, actions: list[str], first_seq: int
) -> None:
    """Audit records through the projector's own projection (so they carry real hashes)."""
    projection = AuditProjection()
    planned = []
    for n, action in enumerate(actions):
        seq = first_seq + n
        event = AuditRecorded(
            actor=f"user-{n % 2}", action=action, target=f"t{n}", outcome="succeeded",
            tenant=tenant, detail=f"#{n}", labels={"n": str(n)},
        )  # fmt: skip
        env = wire.make_envelope(
            event, id=f"{tenant}-{n}", source="test", tenant=tenant, time=T0 + timedelta(minutes=n)
        )
        record = Record("AUDIT", seq, subjects.audit(tenant, "config"), wire.encode(env))
        planned.append(Planned(seq, projection.plan(record)))
    async with warm.transaction():
        assert (await apply_batch(warm, projection, planned)).failed == 0


def _seq_base(tenant: str) -> int:
    return int.from_bytes(tenant.encode()[-4:], "big") * 100


async def test_admins_page_through_their_tenants_audit_trail_newest_first(
    api: Api, warm: asyncpg.Connection
) -> None:
    base = _seq_base(api.tenant)
    await project(warm, api.tenant, ["config.pushed", "dlq.replayed", "config.pushed"], base)
    await project(warm, f"{api.tenant}-other", ["config.pushed"], base + 10)
    auth = api.auth("admin")
    first = (await api.client.get("/api/v1/audit?limit=2", headers=auth)).json()
    assert [e["target"] for e in first["items"]] == ["t2", "t1"]
    item = first["items"][0]
    assert item["action"] == "config.pushed"
    assert item["labels"] == {"n": "2"}
    assert item["pos"] == 3
    assert len(item["hash"]) == 64
    assert item["prev_hash"] == first["items"][1]["hash"]
    second = await api.client.get(
        "/api/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth
    )
    assert [e["target"] for e in second.json()["items"]] == ["t0"]
    assert "next_cursor" not in second.json()
    only = await api.client.get(
        "/api/v1/audit", params={"action": "dlq.*", "actor": "user-1"}, headers=auth
    )
    assert [e["target"] for e in only.json()["items"]] == ["t1"]
    since = await api.client.get(
        "/api/v1/audit", params={"since": (T0 + timedelta(minutes=1)).isoformat()}, headers=auth
    )
    assert [e["target"] for e in since.json()["items"]] == ["t2", "t1"]


async def test_the_audit_trail_needs_the_admin_scope(api: Api) -> None:
    for scopes in (("tasks:read",), ("tasks:read", "tasks:write")):
        answer = await api.client.get("/api/v1/audit", headers=api.auth(*scopes))
        assert answer.status_code == 403
        assert json.loads(answer.text)["detail"] == "this operation needs the `admin` scope"
    assert (await api.client.get("/api/v1/audit")).status_code == 401


async def test_a_cursor_from_elsewhere_is_refused(api: Api) -> None:
    answer = await api.client.get(
        "/api/v1/audit", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=api.auth("admin")
    )
    assert answer.status_code == 422
