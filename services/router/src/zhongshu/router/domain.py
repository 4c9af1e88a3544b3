"""What the router decides, with no I/O: who may talk to an app (the configured whitelist and the
granted roles), whether a group message is addressed to the bot, what a message means (command,
query, alert, a chat admin command), the GCRA rate-limit arithmetic, and the events it publishes,
whose ids all derive from the inbound event's id."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zhongshu.contracts.events import (
    OUTCOME_DENIED,
    OUTCOME_SUCCEEDED,
    AlertActionRequested,
    AlertActor,
    AlertRaised,
    AuditRecorded,
    CardActionReceived,
    CommandRequested,
    MessageReceived,
    QueryRequested,
    ReplyGenerated,
    Sender,
)
from zhongshu.contracts.events.alerts import ALERT_ACTIONS, CARD_VALUE_KEY, AlertAction
from zhongshu.contracts.grants import ROLE_ADMIN, ROLES, Grant
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.router.rules import QUERY_COMMANDS, AlertSource, RouterRules
from zhongshu.runtime.hubconfig import AccessRules, App, GroupRules, Rate

Inbound = MessageReceived | CardActionReceived

# Stages of derive_msg_id: one per kind of output, so each inbound event yields each at most once.
STAGE_REPLY = "router.reply"
STAGE_COMMAND = "router.command"
STAGE_QUERY = "router.query"
STAGE_ALERT = "router.alert"
STAGE_AUDIT = "router.audit"
STAGE_ALERT_ACTION = "router.alert_action"

NOT_WHITELISTED = "not whitelisted"


# --------------------------------------------------------------------------- who is asking


def sender_of(event: Inbound) -> Sender:
    return event.sender if isinstance(event, MessageReceived) else event.user


def sender_ids(sender: Sender) -> frozenset[str]:
    """Every id the platform gave the sender: a whitelist may name any of them."""
    ids = (sender.id, sender.open_id, sender.union_id, sender.user_id, sender.staff_id)
    return frozenset(i for i in ids if i)


# --------------------------------------------------------------------------- permissions


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str
    roles: tuple[str, ...] = ()


def decide_access(
    rules: AccessRules,
    *,
    user_ids: frozenset[str],
    chat_id: str,
    departments: frozenset[str] | None = None,
    granted: frozenset[str] = frozenset(),
) -> AccessDecision:
    """Deny wins over everything (admins and grants included); admins (listed or granted) are
    always allowed otherwise, and so is anyone granted a role; with no users, chats or
    departments listed everyone is allowed; else the sender, the chat or one of the sender's
    departments must be listed. ``departments=None`` means the platform did not say: then only
    users and chats decide. ``granted``: the sender's roles in the `grants` bucket, which the
    decision's roles carry (the agent sees them)."""
    deny = set(rules.deny)
    if user_ids & deny or chat_id in deny:
        return AccessDecision(False, "denied")
    if user_ids & set(rules.admins) or ROLE_ADMIN in granted:
        return AccessDecision(True, "admin", _roles(granted | {ROLE_ADMIN}))
    if granted:
        return AccessDecision(True, "granted", _roles(granted))
    if not (rules.users or rules.chats or rules.departments):
        return AccessDecision(True, "open")
    if user_ids & set(rules.users):
        return AccessDecision(True, "user listed")
    if chat_id in rules.chats:
        return AccessDecision(True, "chat listed")
    if departments is not None and departments & set(rules.departments):
        return AccessDecision(True, "department listed")
    return AccessDecision(False, NOT_WHITELISTED)


def _roles(roles: frozenset[str]) -> tuple[str, ...]:
    """In the order ``ROLES`` lists them (admin first), then any other."""
    return (*(r for r in ROLES if r in roles), *sorted(roles - set(ROLES)))


def is_admin(decision: AccessDecision) -> bool:
    return decision.allowed and ROLE_ADMIN in decision.roles


def departments_may_decide(rules: AccessRules, decision: AccessDecision) -> bool:
    """Whether the sender's departments could turn this refusal into an admission: only when
    departments are listed and nothing but the lists refused (deny and admins already decided).
    The handler looks departments up only then, so other apps make no platform call."""
    return bool(rules.departments) and not decision.allowed and decision.reason == NOT_WHITELISTED


# --------------------------------------------------------------------------- group rule


def addressed_text(message: MessageReceived, group: GroupRules) -> str | None:
    """The text meant for the bot, or None when a group message is not addressed to it.

    One-to-one chats are always addressed. In groups (with ``require_mention``) the bot answers
    an @-mention or a message starting with a configured prefix; a prefix other than ``/`` is
    removed (``/`` starts a slash command and stays)."""
    text = message.text.strip()
    if message.chat_kind != "group" or not group.require_mention or message.mentions_bot:
        return text
    for prefix in group.prefixes:
        if prefix and text.startswith(prefix):
            return text if prefix == "/" else text[len(prefix) :].strip()
    return None


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Query:
    """Answered by the router itself: ``help``, ``status [task]``, ``tasks``."""

    command: str
    args: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Command:
    """Handed to the agent on ``chat.command``."""

    command: str
    args: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class UnknownCommand:
    command: str


@dataclass(frozen=True)
class AdminCommand:
    """``/grant <user> <role>``, ``/revoke <user> <role>``, ``/whois [user]``: answered by the
    router itself. ``user`` is a platform user id (an @-mention resolved), empty for ``/whois``
    alone (the sender); ``problem`` is the usage text when the arguments do not parse."""

    command: str
    user: str = ""
    role: str = ""
    problem: str = ""


Classification = Query | Command | UnknownCommand | AdminCommand

ADMIN_COMMANDS: frozenset[str] = frozenset({"grant", "revoke", "whois"})
ADMIN_USAGE = {
    "grant": "Usage: /grant <user or @mention> <role>; roles: " + ", ".join(ROLES),
    "revoke": "Usage: /revoke <user or @mention> <role>; roles: " + ", ".join(ROLES),
    "whois": "Usage: /whois [user or @mention]",
}


def admin_command(text: str, message: MessageReceived) -> AdminCommand | None:
    """The chat admin command ``text`` is, if it is one (before the configured rules: these
    names are the router's own)."""
    text = text.strip()
    if not text.startswith("/"):
        return None
    head, _, rest = text[1:].partition(" ")
    name = head.strip().lower()
    if name not in ADMIN_COMMANDS:
        return None
    args = _split(rest.strip())
    if name == "whois":
        if not args:
            return AdminCommand(name)
        user, problem = resolve_user(" ".join(args), message)
        return AdminCommand(name, user=user, problem=problem)
    if len(args) < 2:
        return AdminCommand(name, problem=ADMIN_USAGE[name])
    role = args[-1].lower()
    if role not in ROLES:
        return AdminCommand(name, problem=f"Unknown role {args[-1]!r}. " + ADMIN_USAGE[name])
    user, problem = resolve_user(" ".join(args[:-1]), message)
    return AdminCommand(name, user=user, role=role, problem=problem)


def resolve_user(text: str, message: MessageReceived) -> tuple[str, str]:
    """(user id, problem): ``@name`` is the message's @-mention of that name (or its only
    mention of someone other than the bot), anything else a platform user id as given."""
    mentioned = [m for m in message.mentions if not m.is_bot_self and m.id and m.id != "all"]
    if not text.startswith("@"):
        return text, ""
    name = text[1:].strip()
    for mention in mentioned:
        if mention.name and mention.name == name:
            return mention.id, ""
    if len(mentioned) == 1:
        return mentioned[0].id, ""
    return "", f"Cannot tell who {text} is: @-mention one user, or give their user id."


def _split(text: str) -> tuple[str, ...]:
    """Arguments as a shell would split them (quotes group words); without quotes or escapes
    that is whitespace splitting, which costs a tenth of ``shlex`` on the hot path."""
    if not any(c in text for c in "\"'\\"):
        return tuple(text.split())
    try:
        return tuple(shlex.split(text))
    except ValueError:  # an unbalanced quote: fall back to whitespace
        return tuple(text.split())


def _named(command: str, args: tuple[str, ...], text: str) -> Query | Command:
    return Query(command, args, text) if command in QUERY_COMMANDS else Command(command, args, text)


def classify_text(text: str, rules: RouterRules) -> Classification:
    """Slash commands first, then keyword and regex rules in order, else free text becomes the
    ``free_text_command`` (an LLM conversation)."""
    text = text.strip()
    if text.startswith("/") and len(text) > 1:
        head, _, rest = text[1:].partition(" ")
        name = head.strip().lower()
        rest = rest.strip()
        if name not in {c.name for c in rules.commands}:
            return UnknownCommand(name)
        return _named(name, _split(rest), rest)
    lowered = text.lower()
    for rule in rules.rules:
        if rule.keyword is not None and rule.keyword.lower() in lowered:
            return _named(rule.command, (), text)
        if rule.regex is not None:
            match = re.search(rule.regex, text)
            if match:
                args = tuple(v for v in match.groupdict().values() if v is not None)
                return _named(rule.command, args, text)
    return Command(rules.free_text_command, (), text)


def classify_card_action(action: CardActionReceived, rules: RouterRules) -> Classification:
    """A card value ``{"command": "status t1"}`` (or ``"/status t1"``, or with ``"args"``)
    is that command; otherwise the card's ``action_name`` mapped in ``card_actions``; otherwise
    the click goes to the agent as the ``card_action`` command."""
    value: Mapping[str, Any] = action.action
    command = value.get("command")
    if isinstance(command, str) and command.strip():
        raw = command.strip().removeprefix("/")
        extra = value.get("args")
        if isinstance(extra, list | tuple):
            raw = " ".join([raw, *(shlex.quote(str(a)) for a in extra)])
        return classify_text("/" + raw, rules)
    if action.action_name and action.action_name in rules.card_actions:
        return classify_text("/" + rules.card_actions[action.action_name], rules)
    return Command("card_action")


def alert_source_for(
    rules: RouterRules, *, chat_id: str, user_ids: Iterable[str]
) -> AlertSource | None:
    ids = set(user_ids)
    for source in rules.alert_sources:
        if (source.chat and source.chat == chat_id) or (source.sender and source.sender in ids):
            return source
    return None


# --------------------------------------------------------------------------- screening


@dataclass(frozen=True)
class FromAlertSource:
    message: MessageReceived
    source: AlertSource


@dataclass(frozen=True)
class NotAddressed:
    """A group message not meant for the bot: acked silently."""


@dataclass(frozen=True)
class Addressed:
    what: Classification
    access: AccessDecision


Screened = FromAlertSource | NotAddressed | Addressed


def screen(
    event: Inbound, app: App, rules: RouterRules, granted: frozenset[str] = frozenset()
) -> Screened:
    """Alert sources first (no whitelist or group rule: the operator named them), then the
    group rule, then what the event means and whether its sender may ask it (``granted``: the
    sender's granted roles)."""
    user_ids = sender_ids(sender_of(event))
    if isinstance(event, MessageReceived):
        source = alert_source_for(rules, chat_id=event.chat_id, user_ids=user_ids)
        if source is not None:
            return FromAlertSource(event, source)
        text = addressed_text(event, app.group)
        if text is None:
            return NotAddressed()
        what: Classification = admin_command(text, event) or classify_text(text, rules)
    else:
        what = classify_card_action(event, rules)
    access = decide_access(app.access, user_ids=user_ids, chat_id=event.chat_id, granted=granted)
    return Addressed(what, access)


# --------------------------------------------------------------------------- alert cards


@dataclass(frozen=True)
class AlertClick:
    """A click on an alert card's button: which alert, which action (None: the value names an
    alert but no action we know, a forged or newer card)."""

    key: str
    action: AlertAction | None


def alert_click(event: CardActionReceived) -> AlertClick | None:
    """The alert action a card click asks for; None when the button is not an alert's."""
    key = event.action.get(CARD_VALUE_KEY)
    if not isinstance(key, str) or not key:
        return None
    op = event.action.get("op")
    action: AlertAction | None = None
    for known in ALERT_ACTIONS:
        if op == known:
            action = known
    return AlertClick(key, action)


def may_handle_alerts(
    rules: AccessRules, user_ids: frozenset[str], granted: frozenset[str] = frozenset()
) -> bool:
    """Only the app's admins (listed, or granted `admin`) press an alert's buttons (a denied id
    never, admin or not)."""
    admin = bool(user_ids & set(rules.admins)) or ROLE_ADMIN in granted
    return admin and not user_ids & set(rules.deny)


def alert_action_requested(
    event: CardActionReceived, click: AlertClick, name: str = ""
) -> AlertActionRequested:
    """``name``: the clicking user's, when known (card callbacks carry ids only)."""
    assert click.action is not None
    return AlertActionRequested(
        key=click.key,
        action=click.action,
        actor=AlertActor(
            id=event.user.id, name=name or event.user.name, platform=event.platform, app=event.app
        ),
        tenant=event.tenant,
        chat_id=event.chat_id or None,
        message_id=event.message_id or event.card_id,
    )


def alert_action_denied(event: CardActionReceived, click: AlertClick, reason: str) -> AuditRecorded:
    return AuditRecorded(
        actor=event.user.id,
        action="alert.denied",
        target=f"alert/{click.key}",
        outcome=OUTCOME_DENIED,
        tenant=event.tenant,
        detail=f"{click.action or 'unknown action'}: {reason}",
        labels={"app": event.app, "platform": event.platform, "chat_id": event.chat_id},
    )


# --------------------------------------------------------------------------- rate limits (GCRA)


@dataclass(frozen=True)
class GcraResult:
    allowed: bool
    tat_ms: int
    """The theoretical arrival time to store (unchanged when refused)."""
    retry_after_ms: int
    """0 when allowed; else how long until one more request fits."""


def gcra_params(rate: Rate) -> tuple[int, int]:
    """(emission interval, period) in ms: ``count`` requests at once from rest, then one per
    ``period/count``."""
    period_ms = round(rate.period_s * 1000)
    return max(1, period_ms // rate.count), period_ms


def gcra(tat_ms: int | None, now_ms: int, rate: Rate) -> GcraResult:
    """The Generic Cell Rate Algorithm, as the Redis script computes it (kept equal by tests)."""
    interval, period = gcra_params(rate)
    new_tat = max(tat_ms or 0, now_ms) + interval
    allow_at = new_tat - period
    if allow_at > now_ms:
        return GcraResult(False, tat_ms or 0, allow_at - now_ms)
    return GcraResult(True, new_tat, 0)


@dataclass(frozen=True)
class LimitVerdict:
    allowed: bool
    retry_after_ms: int = 0
    scope: str = ""
    """``user`` or ``chat``: which limit refused it."""
    notify: bool = False
    """The first refusal in this window: say "slow down" once."""

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.retry_after_ms / 1000))


# --------------------------------------------------------------------------- texts


def help_text(rules: RouterRules) -> str:
    lines = [rules.help_header]
    for spec in rules.commands:
        usage = f"/{spec.name} {spec.usage}".rstrip()
        lines.append(f"{usage} — {spec.help}" if spec.help else usage)
    return "\n".join(lines)


def _status_line(status: Mapping[str, Any]) -> str:
    task = str(status.get("task_id", "?"))
    state = str(status.get("status", "unknown"))
    title = status.get("title")
    line = f"{task}: {state}"
    if title:
        line += f" — {title}"
    detail = status.get("detail")
    if detail:
        line += f" ({detail})"
    return line


def task_status_text(task_id: str, status: Mapping[str, Any] | None, rules: RouterRules) -> str:
    if status is None:
        return rules.no_such_task_text.format(task=task_id)
    return _status_line({"task_id": task_id, **status})


def tasks_text(statuses: list[Mapping[str, Any]], rules: RouterRules) -> str:
    if not statuses:
        return rules.no_tasks_text
    return "\n".join(_status_line(s) for s in statuses)


# --------------------------------------------------------------------------- outputs


def reply(event: Inbound, inbound_id: str, text: str) -> ReplyGenerated:
    """The router's one direct reply to an inbound event, in place."""
    return ReplyGenerated(
        reply_id=derive_msg_id(inbound_id, STAGE_REPLY),
        in_reply_to=inbound_id,
        platform=event.platform,
        app=event.app,
        tenant=event.tenant,
        chat_id=event.chat_id,
        reply_handle=event.reply_handle,
        kind="text",
        text=text,
        chunk_index=0,
        final=True,
    )


def command_requested(event: Inbound, command: Command, roles: tuple[str, ...]) -> CommandRequested:
    return CommandRequested(
        command=command.command,
        args=command.args,
        text=command.text,
        message=event if isinstance(event, MessageReceived) else None,
        card_action=event if isinstance(event, CardActionReceived) else None,
        sender_roles=roles,
    )


def query_requested(
    message: MessageReceived, query: Query, roles: tuple[str, ...]
) -> QueryRequested:
    return QueryRequested(message=message, text=query.text, sender_roles=roles)


def alert_raised(message: MessageReceived, source: AlertSource, inbound_id: str) -> AlertRaised:
    text = message.text.strip()
    title, _, detail = text.partition("\n")
    return AlertRaised(
        level=source.level,
        source=source.name,
        title=title or f"alert from {source.name}",
        detail=detail.strip(),
        tenant=message.tenant,
        labels={"app": message.app, "chat_id": message.chat_id, "sender": message.sender.id},
        dedupe_key=derive_msg_id(inbound_id, STAGE_ALERT),
    )


def access_denied(event: Inbound, decision: AccessDecision) -> AuditRecorded:
    return AuditRecorded(
        actor=sender_of(event).id,
        action="chat.denied",
        target=f"{event.app}/{event.chat_id}",
        outcome=OUTCOME_DENIED,
        tenant=event.tenant,
        detail=decision.reason,
        labels={"app": event.app, "platform": event.platform, "chat_id": event.chat_id},
    )


# --------------------------------------------------------------------------- chat admin commands

NOT_ADMIN_TEXT = "Only this app's admins can manage roles."


def grant_of(event: MessageReceived, command: AdminCommand, at: str) -> Grant:
    return Grant(
        tenant=event.tenant,
        app=event.app,
        user=command.user,
        role=command.role,
        granted_by=f"chat:{event.sender.id}",
        granted_at=at,
    )


def grant_changed_text(command: AdminCommand, changed: bool) -> str:
    if command.command == "grant":
        if changed:
            return f"Granted {command.role} to {command.user}."
        return f"{command.user} already has {command.role}."
    if changed:
        return f"Revoked {command.role} from {command.user}."
    return (
        f"{command.user} has no granted {command.role} "
        "(a role in zhongshu.yaml's access lists is changed there)."
    )


def whois_text(
    user: str, user_ids: frozenset[str], rules: AccessRules, granted: Iterable[Grant]
) -> str:
    """A user's roles in the app: granted ones (with who granted them) and the configuration's."""
    lines = [f"{user}:"]
    configured = [
        name
        for name, ids in (
            ("admin", rules.admins),
            ("user", rules.users),
            ("denied", rules.deny),
        )
        if user_ids & set(ids)
    ]
    for grant in granted:
        by = f" by {grant.granted_by}" if grant.granted_by else ""
        at = f" at {grant.granted_at}" if grant.granted_at else ""
        lines.append(f"- {grant.role} (granted{by}{at})")
    lines.extend(f"- {name} (zhongshu.yaml access)" for name in configured)
    if len(lines) == 1:
        lines.append("- no role (the app's whitelist decides)")
    return "\n".join(lines)


def grant_audit(
    event: MessageReceived, command: AdminCommand, outcome: str = OUTCOME_SUCCEEDED
) -> AuditRecorded:
    """`grant.added`, `grant.revoked`, or `grant.denied` for a non-admin's attempt."""
    if outcome == OUTCOME_DENIED:
        action = "grant.denied"
    else:
        action = "grant.added" if command.command == "grant" else "grant.revoked"
    return AuditRecorded(
        actor=f"chat:{event.sender.id}",
        action=action,
        target=f"{event.app}/{command.user}",
        outcome=outcome,
        tenant=event.tenant,
        detail=f"/{command.command} {command.user} {command.role}".rstrip(),
        labels={
            "app": event.app,
            "platform": event.platform,
            "chat_id": event.chat_id,
            "user": command.user,
            "role": command.role,
            "via": "chat",
        },
    )
