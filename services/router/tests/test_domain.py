"""The router's pure decisions: permissions, the group rule, classification, GCRA."""

from __future__ import annotations

import msgspec
import pytest

from zhongshu.contracts.events import CardActionReceived, MessageReceived, Sender
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.router import domain
from zhongshu.router.rules import AlertSource, RouterRules, TextRule
from zhongshu.runtime.hubconfig import AccessRules, GroupRules, Rate, parse_config

RULES = RouterRules(
    rules=(
        TextRule(command="task", keyword="deploy"),
        TextRule(command="status", regex=r"how is (?P<task>t-\d+)"),
    ),
    card_actions={"approve": "task approve"},
    alert_sources=(AlertSource(name="zabbix", chat="oc_alerts", level="error"),),
)


def message(**changes: object) -> MessageReceived:
    return msgspec.structs.replace(example(MessageReceived), **changes)


# --------------------------------------------------------------------------- permissions


def decide(rules: AccessRules, user: str = "u1", chat: str = "c1", **kw: object) -> bool:
    departments = kw.get("departments")
    assert departments is None or isinstance(departments, frozenset)
    return domain.decide_access(
        rules, user_ids=frozenset({user}), chat_id=chat, departments=departments
    ).allowed


def test_empty_whitelist_allows_everyone() -> None:
    assert decide(AccessRules())


def test_listed_user_or_chat_is_allowed_and_others_refused() -> None:
    rules = AccessRules(users=("u1",), chats=("c9",))
    assert decide(rules, user="u1")
    assert decide(rules, user="u2", chat="c9")
    assert not decide(rules, user="u2", chat="c1")


def test_deny_wins_over_every_list_and_admin() -> None:
    rules = AccessRules(users=("u1",), admins=("u1",), deny=("u1",))
    assert not decide(rules, user="u1")
    assert not decide(AccessRules(deny=("c1",)), chat="c1")


def test_admins_are_always_allowed_and_get_the_admin_role() -> None:
    decision = domain.decide_access(
        AccessRules(users=("someone",), admins=("boss",)),
        user_ids=frozenset({"boss"}),
        chat_id="c1",
    )
    assert decision.allowed
    assert decision.roles == ("admin",)


def test_unknown_departments_leave_the_decision_to_users_and_chats() -> None:
    rules = AccessRules(departments=("d1",))
    assert decide(rules, departments=frozenset({"d1"}))
    assert not decide(rules, departments=frozenset({"d2"}))
    assert not decide(rules, departments=None)
    assert decide(AccessRules(departments=("d1",), users=("u1",)), departments=None)


def test_departments_are_worth_asking_for_only_when_they_could_admit_the_sender() -> None:
    def may(rules: AccessRules, user: str = "u1") -> bool:
        decision = domain.decide_access(rules, user_ids=frozenset({user}), chat_id="c1")
        return domain.departments_may_decide(rules, decision)

    assert may(AccessRules(departments=("d1",)))
    assert not may(AccessRules(users=("u2",)))  # no department rules: never asked
    assert not may(AccessRules())  # open app
    assert not may(AccessRules(departments=("d1",), users=("u1",)))  # already listed
    assert not may(AccessRules(departments=("d1",), chats=("c1",)))
    assert not may(AccessRules(departments=("d1",), admins=("u1",)))
    assert not may(AccessRules(departments=("d1",), deny=("u1",)))  # deny wins anyway


def test_any_of_the_senders_platform_ids_may_be_listed() -> None:
    sender = Sender(id="staff-1", open_id="ou_1", union_id="on_1", user_id="e1")
    ids = domain.sender_ids(sender)
    assert domain.decide_access(AccessRules(users=("on_1",)), user_ids=ids, chat_id="c").allowed


# --------------------------------------------------------------------------- group rule


def test_group_message_without_mention_or_prefix_is_not_addressed() -> None:
    msg = message(chat_kind="group", mentions_bot=False, text="lunch anyone?")
    assert domain.addressed_text(msg, GroupRules()) is None


def test_group_message_with_mention_or_prefix_is_addressed() -> None:
    group = GroupRules(prefixes=("/", "zs "))
    assert domain.addressed_text(message(mentions_bot=True, text=" hi "), group) == "hi"
    msg = message(chat_kind="group", mentions_bot=False, text="/help")
    assert domain.addressed_text(msg, group) == "/help"
    msg = message(chat_kind="group", mentions_bot=False, text="zs what's up")
    assert domain.addressed_text(msg, group) == "what's up"


def test_one_to_one_and_groups_without_the_mention_rule_are_always_addressed() -> None:
    p2p = message(chat_kind="p2p", mentions_bot=False, text="hello")
    assert domain.addressed_text(p2p, GroupRules()) == "hello"
    group = message(chat_kind="group", mentions_bot=False, text="hello")
    assert domain.addressed_text(group, GroupRules(require_mention=False)) == "hello"


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/help", domain.Query("help")),
        ("/HELP", domain.Query("help")),
        ("/status t-1", domain.Query("status", ("t-1",), "t-1")),
        ("/status", domain.Query("status")),
        ("/tasks", domain.Query("tasks")),
        ("/task sum the week", domain.Command("task", ("sum", "the", "week"), "sum the week")),
        (
            "/schedule '@daily' report",
            domain.Command("schedule", ("@daily", "report"), "'@daily' report"),
        ),
        ("/reset", domain.Command("reset")),
        ("/frobnicate", domain.UnknownCommand("frobnicate")),
        ("please Deploy the app", domain.Command("task", (), "please Deploy the app")),
        ("how is t-42 doing?", domain.Query("status", ("t-42",), "how is t-42 doing?")),
        ("what is the weather", domain.Command("chat", (), "what is the weather")),
        ("/", domain.Command("chat", (), "/")),
    ],
)
def test_classification(text: str, expected: domain.Classification) -> None:
    assert domain.classify_text(text, RULES) == expected


def card(action: dict[str, object], name: str | None = None) -> CardActionReceived:
    return msgspec.structs.replace(example(CardActionReceived), action=action, action_name=name)


def test_card_actions_map_to_commands() -> None:
    assert domain.classify_card_action(card({"command": "status t-1"}), RULES) == domain.Query(
        "status", ("t-1",), "t-1"
    )
    assert domain.classify_card_action(
        card({"command": "/task", "args": ["go now"]}), RULES
    ) == domain.Command("task", ("go now",), "'go now'")
    assert domain.classify_card_action(card({}, "approve"), RULES) == domain.Command(
        "task", ("approve",), "approve"
    )
    assert domain.classify_card_action(card({"x": 1}), RULES) == domain.Command("card_action")


def test_messages_from_alert_sources_are_alerts_with_the_rules_level() -> None:
    msg = message(chat_id="oc_alerts", text="disk full on db-1\n95% used")
    source = domain.alert_source_for(RULES, chat_id=msg.chat_id, user_ids={"u"})
    assert source is not None
    alert = domain.alert_raised(msg, source, "evt-1")
    assert (alert.level, alert.source, alert.title, alert.detail) == (
        "error",
        "zabbix",
        "disk full on db-1",
        "95% used",
    )
    assert domain.alert_source_for(RULES, chat_id="oc_other", user_ids={"u"}) is None


def test_help_lists_the_configured_commands() -> None:
    text = domain.help_text(RouterRules())
    for line in ("/help", "/status [task]", "/tasks", "/task <text>", "/schedule", "/reset"):
        assert line in text


def test_task_status_text_says_when_a_task_is_missing() -> None:
    assert domain.task_status_text("t-9", None, RULES) == "No such task: t-9"
    text = domain.task_status_text("t-1", {"status": "running", "title": "report"}, RULES)
    assert text == "t-1: running — report"


# --------------------------------------------------------------------------- GCRA


def test_gcra_allows_a_burst_of_count_then_one_per_interval() -> None:
    rate = Rate(count=3, period_s=60)  # one every 20 s, three at once from rest
    tat: int | None = None
    now = 1_000_000
    for _ in range(3):
        result = domain.gcra(tat, now, rate)
        assert result.allowed
        tat = result.tat_ms
    refused = domain.gcra(tat, now, rate)
    assert not refused.allowed
    assert refused.retry_after_ms == 20_000
    assert refused.tat_ms == tat  # a refusal consumes nothing
    assert not domain.gcra(tat, now + 19_999, rate).allowed
    assert domain.gcra(tat, now + 20_000, rate).allowed


def test_gcra_recovers_fully_after_a_quiet_period() -> None:
    rate = Rate(count=2, period_s=10)
    tat = domain.gcra(domain.gcra(None, 0, rate).tat_ms, 0, rate).tat_ms
    assert not domain.gcra(tat, 0, rate).allowed
    later = 10_000
    assert domain.gcra(domain.gcra(tat, later, rate).tat_ms, later, rate).allowed


def test_slow_down_seconds_round_up() -> None:
    assert domain.LimitVerdict(False, 1).retry_after_s == 1
    assert domain.LimitVerdict(False, 5_001).retry_after_s == 6


# --------------------------------------------------------------------------- outputs


def test_outputs_derive_their_ids_from_the_inbound_event() -> None:
    msg = message()
    reply = domain.reply(msg, "evt-1", "hi")
    assert reply.reply_id == derive_msg_id("evt-1", domain.STAGE_REPLY)
    assert reply.reply_handle == msg.reply_handle
    assert reply.in_reply_to == "evt-1"
    command = domain.command_requested(msg, domain.Command("chat", (), "hi"), ("admin",))
    assert command.message == msg
    assert command.sender_roles == ("admin",)
    command = domain.command_requested(card({}), domain.Command("card_action"), ())
    assert command.card_action is not None


def test_a_refusal_is_audited_as_denied() -> None:
    msg = message()
    audit = domain.access_denied(msg, domain.AccessDecision(False, "not whitelisted"))
    assert (audit.action, audit.outcome, audit.actor) == ("chat.denied", "denied", msg.sender.id)


# --------------------------------------------------------------------------- screening

APP = parse_config(
    """
apps:
  a:
    tenant: acme
    platform: feishu
    feishu: {app_id: x, app_secret: s}
    access: {users: [ou_ok]}
""",
    environ={},
).apps["a"]


def test_screening_puts_alert_sources_before_the_group_rule_and_the_whitelist() -> None:
    msg = message(chat_id="oc_alerts", chat_kind="group", mentions_bot=False, text="cpu 90%")
    screened = domain.screen(msg, APP, RULES)
    assert isinstance(screened, domain.FromAlertSource)
    assert screened.source.name == "zabbix"


def test_screening_ignores_group_chatter_before_judging_the_sender() -> None:
    msg = message(chat_kind="group", mentions_bot=False, text="lunch?")
    assert domain.screen(msg, APP, RULES) == domain.NotAddressed()


def test_screening_classifies_and_judges_addressed_messages_and_cards() -> None:
    ok = msgspec.structs.replace(example(MessageReceived).sender, id="ou_ok")
    screened = domain.screen(message(sender=ok, text="/tasks"), APP, RULES)
    assert screened == domain.Addressed(
        domain.Query("tasks"), domain.AccessDecision(True, "user listed")
    )
    screened = domain.screen(card({"command": "reset"}), APP, RULES)
    assert isinstance(screened, domain.Addressed)
    assert screened.what == domain.Command("reset")
    assert not screened.access.allowed
