"""Every NATS subject zhongshu publishes to or subscribes on, built from sanitized tokens.

Services never format subjects themselves: a tenant called `a.b` or `*` must not be able to
publish into somebody else's subject space or widen a subscription.
"""

import functools
import hashlib
import re
from typing import Final

MAX_TOKEN_LENGTH: Final = 64
"""Longer tokens are shortened: NATS has no token limit, but subjects are stored with every
message and appear in metrics labels and log lines."""

_UNSAFE = re.compile(r"[^a-z0-9_-]")
_HASH_CHARS = 8


# Tenants, platforms and apps repeat on every message: remember the tokens they became.
@functools.lru_cache(maxsize=8192)
def sanitize_token(value: str) -> str:
    """Turn any string into one safe subject token.

    Lower-cased; every character outside `[a-z0-9_-]` becomes `_`; empty becomes `_`. So the
    result never holds `.`, `*`, `>` or whitespace. Distinct inputs may map to the same token
    (`a.b` and `a_b`): tokens route messages, they are not identities, and the envelope carries
    the exact values. Tokens longer than `MAX_TOKEN_LENGTH` keep a readable prefix plus a hash
    of the original value, so distinct long values stay distinct.
    """
    token = _UNSAFE.sub("_", value.lower())
    if not token:
        return "_"
    if len(token) > MAX_TOKEN_LENGTH:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
        token = f"{token[: MAX_TOKEN_LENGTH - _HASH_CHARS - 1]}-{digest}"
    return token


def _join(*tokens: str) -> str:
    return ".".join(sanitize_token(token) for token in tokens)


# --- Builders: one per kind of message, general to specific ------------------------------------


def chat_inbound(platform: str, tenant: str) -> str:
    """`chat.inbound.<platform>.<tenant>`: normalized platform events, from ingress."""
    return "chat.inbound." + _join(platform, tenant)


def chat_command(platform: str, tenant: str) -> str:
    """`chat.command.<platform>.<tenant>`: commands the router hands to the agent."""
    return "chat.command." + _join(platform, tenant)


def chat_query(platform: str, tenant: str) -> str:
    """`chat.query.<platform>.<tenant>`: questions the router hands on."""
    return "chat.query." + _join(platform, tenant)


def chat_reply(platform: str, tenant: str) -> str:
    """`chat.reply.<platform>.<tenant>`: what the notifier must send back to a chat."""
    return "chat.reply." + _join(platform, tenant)


def alert(level: str, source: str) -> str:
    """`alert.<level>.<source>`: level is `warning`, `error` or `critical`."""
    return "alert." + _join(level, source)


def alert_action(key: str) -> str:
    """`alerting.action.<key>`: a person's Acknowledge, Silence or Resolve on one alert."""
    return "alerting.action." + _join(key)


def alert_state(key: str) -> str:
    """`alerting.state.<key>`: one alert's lifecycle changes, in order."""
    return "alerting.state." + _join(key)


def task_requested(tenant: str) -> str:
    """`task.requested.<tenant>`: a task to run, from the gateway or a schedule."""
    return "task.requested." + _join(tenant)


def task_event(tenant: str, task_id: str) -> str:
    """`task.event.<tenant>.<task_id>`: one task's lifecycle, in order."""
    return "task.event." + _join(tenant, task_id)


def schedule(tenant: str, schedule_id: str) -> str:
    """`schedule.<tenant>.<schedule_id>`: holds one schedule (its last message is the schedule)."""
    return "schedule." + _join(tenant, schedule_id)


def schedule_fired(tenant: str, schedule_id: str) -> str:
    """`schedule.<tenant>.<schedule_id>.fired`: the `Nats-Schedule-Target` of that schedule.

    The server only fires into its own stream, so firings land here and TASKS sources them as
    `task.requested.<tenant>` (see `streams.SCHEDULES`).
    """
    return schedule(tenant, schedule_id) + ".fired"


def events(team: str, *path: str) -> str:
    """`events.<team>[.<path>...]`: what other teams and devices publish for event rules."""
    return "events." + _join(team, *path)


def workflow_run(tenant: str, run_id: str) -> str:
    """`workflow.run.<tenant>.<run_id>`: one workflow run's events, in order."""
    return "workflow.run." + _join(tenant, run_id)


def workflow_step(tenant: str, run_id: str, step: str) -> str:
    """`workflow.step.<tenant>.<run_id>.<step>`: the work of one step (a StepRequested)."""
    return "workflow.step." + _join(tenant, run_id, step)


def delivery(status: str, platform: str, tenant: str) -> str:
    """`delivery.<status>.<platform>.<tenant>`: what happened to an outgoing reply."""
    return "delivery." + _join(status, platform, tenant)


def audit(tenant: str, kind: str) -> str:
    """`audit.<tenant>.<kind>`: security-relevant actions."""
    return "audit." + _join(tenant, kind)


def dlq(stream: str, consumer: str) -> str:
    """`dlq.<stream>.<consumer>`: messages a consumer gave up on (stream name lower-cased)."""
    return "dlq." + _join(stream, consumer)


def trace_span(trace_id: str) -> str:
    """`trace.span.<trace id>`: the finished spans of one trace (32 hex digits)."""
    return "trace.span." + sanitize_token(trace_id)


def trace_index(key: str) -> str:
    """`trace.index.<digest>`: which trace an id (task, envelope, platform message) belongs to.
    A digest, not the id: ids may be long or hold characters tokens would merge."""
    return "trace.index." + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --- Filters: what consumers subscribe to ---------------------------------------------------------

ALL_CHAT_INBOUND: Final = "chat.inbound.>"
ALL_CHAT_COMMANDS: Final = "chat.command.>"
ALL_CHAT_QUERIES: Final = "chat.query.>"
ALL_CHAT_REPLIES: Final = "chat.reply.>"
ALL_ALERTS: Final = "alert.>"
ALL_ALERTING: Final = "alerting.>"
ALL_ALERT_ACTIONS: Final = "alerting.action.*"
ALL_ALERT_STATES: Final = "alerting.state.*"
ALL_TASK_REQUESTED: Final = "task.requested.>"
ALL_TASK_EVENTS: Final = "task.event.>"
ALL_SCHEDULES: Final = "schedule.*.*"
"""Schedule definitions only (not their firings): listing schedules is reading the last message
of each subject matching this."""
ALL_SCHEDULE_FIRINGS: Final = "schedule.*.*.fired"
ALL_EVENTS: Final = "events.>"
ALL_WORKFLOW_RUNS: Final = "workflow.run.>"
ALL_WORKFLOW_STEPS: Final = "workflow.step.>"
ALL_WORKFLOW: Final = "workflow.>"
ALL_DELIVERIES: Final = "delivery.>"
ALL_AUDIT: Final = "audit.>"
ALL_DLQ: Final = "dlq.>"
ALL_TRACES: Final = "trace.>"


def chat_inbound_for(platform: str) -> str:
    """Every inbound chat event of one platform."""
    return f"chat.inbound.{sanitize_token(platform)}.*"


def alerts_at(level: str) -> str:
    """Every alert of one level."""
    return f"alert.{sanitize_token(level)}.*"


def audits_of(kind: str) -> str:
    """Every tenant's audit records of one kind (`security`, `access` …)."""
    return f"audit.*.{sanitize_token(kind)}"


def workflow_runs_for(tenant: str) -> str:
    """Every workflow run event of one tenant."""
    return f"workflow.run.{sanitize_token(tenant)}.*"


def task_events_for(tenant: str) -> str:
    """Every task event of one tenant."""
    return f"task.event.{sanitize_token(tenant)}.*"


def schedules_for(tenant: str) -> str:
    """Every schedule definition of one tenant."""
    return f"schedule.{sanitize_token(tenant)}.*"


def events_from(team: str) -> str:
    """Everything one team publishes."""
    return f"events.{sanitize_token(team)}.>"


def deliveries_with(status: str) -> str:
    """Every delivery outcome with one status, any platform and tenant."""
    return f"delivery.{sanitize_token(status)}.*.*"


def audit_for(tenant: str) -> str:
    """One tenant's audit trail."""
    return f"audit.{sanitize_token(tenant)}.*"


def dlq_for(stream: str) -> str:
    """Dead letters of one stream, every consumer."""
    return f"dlq.{sanitize_token(stream)}.*"


# --- Matching -------------------------------------------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a concrete subject is matched by a filter (`*` = one token, `>` = one or more)."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def filters_overlap(first: str, second: str) -> bool:
    """Whether some concrete subject is matched by both filters (as the server checks streams)."""
    a = first.split(".")
    b = second.split(".")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == ">" or y == ">":
            # `>` needs at least one more token, which the other side has unless it ended.
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True
