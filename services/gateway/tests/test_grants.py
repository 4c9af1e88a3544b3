"""`/api/v1/grants` and `/api/v1/tokens/revoked`: admin only, validated, paged, tenant-scoped
and audited; a revoked token is refused with 401 by the gateway that revoked it as soon as the
revocation is answered, and by another replica as soon as its watch delivers it."""

from __future__ import annotations

import time
import uuid

from nats.js.client import JetStreamContext

from services.gateway.tests.gateway_testing import Api, StartGateway
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.grants import GRANT_DECODER
from zhongshu.contracts.streams import GRANTS_KV
from zhongshu.devstack.testing import collect, eventually

ADMIN = ("admin",)
GRANTS = "/api/v1/grants"
REVOKED = "/api/v1/tokens/revoked"


def grant(user: str, role: str = "operator", app: str = "ops-bot") -> dict[str, str]:
    return {"app": app, "user": user, "role": role}


async def audits(js: JetStreamContext, tenant: str, kind: str) -> list[AuditRecorded]:
    msgs = await collect(js, subjects.audit(tenant, kind), within_s=2)
    return [wire.decode(m.data, AuditRecorded).data for m in msgs]


async def test_only_admin_tokens_manage_grants(api: Api) -> None:
    for scopes in (("tasks:read",), ("tasks:read", "tasks:write")):
        headers = api.auth(*scopes)
        for answer in (
            await api.client.get(GRANTS, headers=headers),
            await api.client.post(GRANTS, json=grant("ou_a"), headers=headers),
            await api.client.delete(f"{GRANTS}/ops-bot/ou_a/operator", headers=headers),
            await api.client.post(REVOKED, json={"jti": "x"}, headers=headers),
        ):
            assert answer.status_code == 403, answer.text
            assert answer.json()["detail"] == "this operation needs the `admin` scope"
    assert (await api.client.get(GRANTS)).status_code == 401


async def test_a_grant_is_stored_once_revoked_once_and_each_change_is_audited(
    api: Api, js: JetStreamContext
) -> None:
    created = await api.client.post(GRANTS, json=grant("ou_a"), headers=api.auth(*ADMIN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["app"], body["user"], body["role"]) == ("ops-bot", "ou_a", "operator")
    assert body["granted_by"] == "api:test-client"
    assert created.headers["location"] == "/api/v1/grants/ops-bot/ou_a/operator"
    again = await api.client.post(GRANTS, json=grant("ou_a"), headers=api.auth(*ADMIN))
    assert (again.status_code, again.json()["granted_at"]) == (200, body["granted_at"])

    kv = await js.key_value(GRANTS_KV.bucket)
    stored = await kv.get(f"{api.tenant}.ops-bot.ou_a.operator")
    held = GRANT_DECODER.decode(stored.value or b"")
    assert (held.tenant, held.app, held.user, held.role) == (
        api.tenant,
        "ops-bot",
        "ou_a",
        "operator",
    )

    path = f"{GRANTS}/ops-bot/ou_a/operator"
    assert (await api.client.delete(path, headers=api.auth(*ADMIN))).status_code == 204
    gone = await api.client.delete(path, headers=api.auth(*ADMIN))
    assert (gone.status_code, gone.headers["content-type"]) == (404, "application/problem+json")
    assert gone.json()["detail"] == "ou_a has no granted operator in ops-bot"

    records = await audits(js, api.tenant, "grants")
    assert [(a.action, a.target, a.detail, a.actor) for a in records] == [
        ("grant.added", "ops-bot/ou_a", "operator", "api:test-client"),
        ("grant.revoked", "ops-bot/ou_a", "operator", "api:test-client"),
    ]


async def test_invalid_grants_are_422_problems_that_name_the_field(api: Api) -> None:
    cases = {
        "role": grant("ou_a", role="root"),
        "app": grant("ou_a", app="Ops Bot!"),
        "user": grant("ou a"),
        "extra": {**grant("ou_a"), "roles": ["admin"]},
    }
    for field, body in cases.items():
        answer = await api.client.post(GRANTS, json=body, headers=api.auth(*ADMIN))
        assert answer.status_code == 422, field
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in answer.text, answer.text
    bad_role = await api.client.delete(f"{GRANTS}/ops-bot/ou_a/root", headers=api.auth(*ADMIN))
    assert bad_role.status_code == 422
    bad_cursor = await api.client.get(GRANTS, params={"cursor": "nope"}, headers=api.auth(*ADMIN))
    assert (bad_cursor.status_code, bad_cursor.json()["detail"]) == (
        422,
        "the cursor is not one this API gave out",
    )


async def test_grants_are_listed_in_pages_per_tenant_with_filters(api: Api) -> None:
    for user in ("ou_c", "ou_a", "ou_b"):
        await api.client.post(GRANTS, json=grant(user), headers=api.auth(*ADMIN))
    await api.client.post(GRANTS, json=grant("ou_a", "viewer"), headers=api.auth(*ADMIN))
    await api.client.post(GRANTS, json=grant("ou_a", app="hr-bot"), headers=api.auth(*ADMIN))

    seen: list[tuple[str, str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(GRANTS, params=params, headers=api.auth(*ADMIN))).json()
        pages += 1
        seen += [(g["app"], g["user"], g["role"]) for g in page["items"]]
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert pages == 3
    assert seen == [
        ("hr-bot", "ou_a", "operator"),
        ("ops-bot", "ou_a", "operator"),
        ("ops-bot", "ou_a", "viewer"),
        ("ops-bot", "ou_b", "operator"),
        ("ops-bot", "ou_c", "operator"),
    ]
    only = await api.client.get(
        GRANTS, params={"app": "ops-bot", "user": "ou_a"}, headers=api.auth(*ADMIN)
    )
    assert [g["role"] for g in only.json()["items"]] == ["operator", "viewer"]
    other = await api.client.get(
        GRANTS, headers=api.auth(*ADMIN, tenant="t" + uuid.uuid4().hex[:12])
    )
    assert other.json() == {"items": []}


async def test_a_revoked_token_is_refused_at_once_by_every_replica(
    start_gateway: StartGateway, js: JetStreamContext
) -> None:
    first = await start_gateway()
    second = await start_gateway()
    jti = uuid.uuid4().hex
    exp = int(time.time()) + 3600
    victim = {"Authorization": f"Bearer {first.token('tasks:read', jti=jti, exp=exp)}"}
    assert (await first.client.get("/api/v1/tasks", headers=victim)).status_code == 200

    revoked = await first.client.post(
        REVOKED,
        json={"jti": jti, "expires_at": exp, "reason": "leaked"},
        headers=first.auth(*ADMIN),
    )
    assert revoked.status_code == 201, revoked.text
    refused = await first.client.get("/api/v1/tasks", headers=victim)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "the token has been revoked"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    async def second_refuses() -> bool:
        answer = await second.client.get("/api/v1/tasks", headers=victim)
        return answer.status_code == 401

    await eventually(second_refuses, "the other replica to refuse the token")
    again = await first.client.post(REVOKED, json={"jti": jti}, headers=first.auth(*ADMIN))
    assert again.status_code == 200
    other = {"Authorization": f"Bearer {first.token('tasks:read', jti=uuid.uuid4().hex)}"}
    assert (await first.client.get("/api/v1/tasks", headers=other)).status_code == 200
    records = await audits(js, first.tenant, "token")
    assert [(a.action, a.target, a.detail) for a in records] == [
        ("token.revoked", f"token:{jti}", "leaked")
    ]


async def test_a_token_revoked_from_the_command_line_is_refused_without_a_restart(
    api: Api, js: JetStreamContext
) -> None:
    from zhongshu.contracts.grants import RevokedToken
    from zhongshu.contracts.streams import REVOKED_TOKENS_KV
    from zhongshu.runtime import revocations

    jti = uuid.uuid4().hex
    victim = {"Authorization": f"Bearer {api.token('tasks:read', jti=jti)}"}
    assert (await api.client.get("/api/v1/tasks", headers=victim)).status_code == 200
    kv = await js.key_value(REVOKED_TOKENS_KV.bucket)
    # What `zhongshu token revoke` writes (libs/cli tests run the command itself).
    await revocations.revoke(kv, RevokedToken(jti=jti, tenant=api.tenant))

    async def refused() -> bool:
        answer = await api.client.get("/api/v1/tasks", headers=victim)
        return answer.status_code == 401

    await eventually(refused, "the gateway to refuse the revoked token")


async def test_a_user_id_with_characters_keys_may_not_hold_is_granted_and_revoked(
    api: Api,
) -> None:
    user = "$:LWCP_v1:$AbC+9="  # a DingTalk sender id
    created = await api.client.post(GRANTS, json=grant(user), headers=api.auth(*ADMIN))
    assert created.status_code == 201, created.text
    listed = await api.client.get(GRANTS, headers=api.auth(*ADMIN))
    assert [g["user"] for g in listed.json()["items"]] == [user]
    deleted = await api.client.delete(created.headers["location"], headers=api.auth(*ADMIN))
    assert deleted.status_code == 204, deleted.text
