"""Granted roles on a real JetStream: a grant or a revocation written to the `grants` bucket
changes what every running router decides, without a restart; chat admin commands write them
(admins only) and are audited."""

from __future__ import annotations

import msgspec
from nats.js.client import JetStreamContext

from services.router.tests.test_handlers import Hub, alert_click, hub
from zhongshu.contracts import subjects
from zhongshu.contracts.events import (
    AlertActionRequested,
    AuditRecorded,
    Mention,
    MessageReceived,
)
from zhongshu.contracts.grants import Grant
from zhongshu.contracts.streams import GRANTS_KV
from zhongshu.devstack.testing import eventually
from zhongshu.router import domain
from zhongshu.router.rules import RouterRules
from zhongshu.runtime.grants import GrantStore
from zhongshu.runtime.hubconfig import AccessRules
from zhongshu.runtime.service import Service

__all__ = ["hub"]  # the fixture, shared with test_handlers

REFUSAL = RouterRules().refusal_text


async def store(js: JetStreamContext) -> GrantStore:
    return GrantStore(await js.key_value(GRANTS_KV.bucket))


async def caught_up(hub: Hub, *replicas: Service) -> None:
    """Until every replica's watched grants hold the bucket's latest revision."""
    kv = await hub.js.key_value(GRANTS_KV.bucket)
    latest = (await kv.status()).stream_info.state.last_seq or 0

    def current() -> bool:
        return all(r.deps.router.grants.watched.revision >= latest for r in replicas)

    await eventually(current, "the routers to read the grants")


async def test_a_grant_admits_a_user_live_and_its_revocation_refuses_them_again(hub: Hub) -> None:
    config = hub.config("    access: {users: [ou_bob]}\n")
    replicas = [await hub.start(config), await hub.start(config)]
    grants = await store(hub.js)
    await hub.send(hub.message("before", user="ou_carol"))
    await hub.settle()
    await grants.grant(Grant(tenant=hub.tenant, app=hub.app, user="ou_carol", role="operator"))
    await caught_up(hub, *replicas)
    await hub.send(hub.message("granted", user="ou_carol"))
    await hub.settle()
    await grants.revoke(hub.tenant, hub.app, "ou_carol", "operator")
    await caught_up(hub, *replicas)
    await hub.send(hub.message("revoked", user="ou_carol"))
    await hub.settle()
    commands = await hub.commands()
    assert [(c.text, c.sender_roles) for c in commands] == [("granted", ("operator",))]
    assert [r.text for r in await hub.replies()] == [REFUSAL, REFUSAL]


async def test_an_admin_grants_and_revokes_in_chat_by_mention_and_each_change_is_audited(
    hub: Hub,
) -> None:
    replica = await hub.start(hub.config("    access: {admins: [ou_admin], users: [ou_x]}\n"))
    carol = (Mention(id="ou_carol", name="Carol"),)
    await hub.send(hub.message("/grant @Carol operator", user="ou_admin", mentions=carol))
    await hub.settle()
    await caught_up(hub, replica)
    await hub.send(hub.message("hello", user="ou_carol"))
    await hub.send(hub.message("/whois @Carol", user="ou_admin", mentions=carol))
    await hub.settle()
    await hub.send(hub.message("/revoke ou_carol operator", user="ou_admin"))
    await hub.settle()
    await caught_up(hub, replica)
    await hub.send(hub.message("hello again", user="ou_carol"))
    await hub.settle()

    texts = [r.text for r in await hub.replies()]
    assert texts[0] == "Granted operator to ou_carol."
    assert texts[1].startswith("ou_carol:\n- operator (granted by chat:ou_admin at ")
    assert texts[2:] == ["Revoked operator from ou_carol.", REFUSAL]
    assert [(c.text, c.sender_roles) for c in await hub.commands()] == [("hello", ("operator",))]
    assert await (await store(hub.js)).get(hub.tenant, hub.app, "ou_carol", "operator") is None
    audits = await hub.outputs(subjects.audit(hub.tenant, "grants"), AuditRecorded)
    assert [(a.data.actor, a.data.action, a.data.target, a.data.outcome) for a in audits] == [
        ("chat:ou_admin", "grant.added", f"{hub.app}/ou_carol", "succeeded"),
        ("chat:ou_admin", "grant.revoked", f"{hub.app}/ou_carol", "succeeded"),
    ]
    assert audits[0].data.labels["role"] == "operator"


async def test_a_non_admin_is_refused_admin_commands_and_may_only_ask_who_they_are(
    hub: Hub,
) -> None:
    await hub.start(hub.config("    access: {users: [ou_bob]}\n"))
    await hub.send(hub.message("/grant ou_bob admin", user="ou_bob"))
    await hub.settle()
    await hub.send(hub.message("/whois", user="ou_bob"))
    await hub.settle()
    await hub.send(hub.message("/whois ou_other", user="ou_bob"))
    await hub.settle()
    texts = [r.text for r in await hub.replies()]
    assert texts == [
        domain.NOT_ADMIN_TEXT,
        "ou_bob:\n- user (zhongshu.yaml access)",
        domain.NOT_ADMIN_TEXT,
    ]
    assert await (await store(hub.js)).get(hub.tenant, hub.app, "ou_bob", "admin") is None
    audits = await hub.outputs(subjects.audit(hub.tenant, "grants"), AuditRecorded)
    assert [(a.data.actor, a.data.action, a.data.outcome) for a in audits] == [
        ("chat:ou_bob", "grant.denied", "denied"),
        ("chat:ou_bob", "grant.denied", "denied"),
    ]
    assert await hub.commands() == []


async def test_a_granted_admin_presses_alert_buttons_and_a_denied_one_still_cannot(
    hub: Hub,
) -> None:
    replica = await hub.start(hub.config("    access: {admins: [ou_admin], deny: [ou_banned]}\n"))
    grants = await store(hub.js)
    for user in ("ou_dan", "ou_banned"):
        await grants.grant(Grant(tenant=hub.tenant, app=hub.app, user=user, role="admin"))
    await caught_up(hub, replica)
    await hub.send(alert_click(hub, "ou_dan", "acknowledge"))
    await hub.send(alert_click(hub, "ou_banned", "acknowledge"))
    await hub.settle()
    requests = await hub.outputs(subjects.alert_action("k-" + hub.tenant), AlertActionRequested)
    assert [r.data.actor.id for r in requests] == ["ou_dan"]
    audits = await hub.outputs(subjects.audit(hub.tenant, "alert"), AuditRecorded)
    assert [a.data.actor for a in audits] == ["ou_banned"]


# --------------------------------------------------------------------------- pure decisions


def test_grants_widen_the_whitelist_but_deny_still_wins() -> None:
    rules = AccessRules(users=("ou_bob",), deny=("ou_banned",))
    decide = domain.decide_access
    granted = frozenset({"viewer", "operator"})
    assert decide(rules, user_ids=frozenset({"ou_c"}), chat_id="c").allowed is False
    carol = decide(rules, user_ids=frozenset({"ou_c"}), chat_id="c", granted=granted)
    assert (carol.allowed, carol.reason, carol.roles) == (True, "granted", ("operator", "viewer"))
    admin = decide(rules, user_ids=frozenset({"ou_c"}), chat_id="c", granted=frozenset({"admin"}))
    assert (admin.reason, admin.roles, domain.is_admin(admin)) == ("admin", ("admin",), True)
    banned = decide(rules, user_ids=frozenset({"ou_banned"}), chat_id="c", granted=granted)
    assert banned.allowed is False


def _message(text: str, *mentions: Mention) -> MessageReceived:
    from zhongshu.contracts.examples import example

    return msgspec.structs.replace(example(MessageReceived), text=text, mentions=mentions)


def test_admin_commands_parse_users_roles_and_mentions() -> None:
    bot = Mention(id="ou_bot", name="Bot", is_bot_self=True)
    carol = Mention(id="ou_carol", name="Carol Li")
    parse = domain.admin_command
    msg = _message("", bot, carol)
    assert parse("/grant @Carol Li Operator", msg) == domain.AdminCommand(
        "grant", user="ou_carol", role="operator"
    )
    assert parse("/revoke ou_x viewer", msg) == domain.AdminCommand(
        "revoke", user="ou_x", role="viewer"
    )
    assert parse("/whois", msg) == domain.AdminCommand("whois")
    assert parse("/whois @Carol Li", msg) == domain.AdminCommand("whois", user="ou_carol")
    assert parse("/grant ou_x", msg).problem.startswith("Usage: /grant")  # type: ignore[union-attr]
    assert "Unknown role 'root'" in parse("/grant ou_x root", msg).problem  # type: ignore[union-attr]
    two = _message("", carol, Mention(id="ou_d", name="Dan"))
    assert parse("/grant @Eve admin", two).problem.startswith("Cannot tell who @Eve")  # type: ignore[union-attr]
    assert parse("/status", msg) is None
    assert parse("grant ou_x admin", msg) is None
