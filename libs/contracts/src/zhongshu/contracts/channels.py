"""Every kind of subject on the bus (a channel of the AsyncAPI document), and the shape of a
party's declared topology: what it publishes and what it consumes.

Services declare their side in code (``Service(publishes=...)`` and their consumers); the
AsyncAPI document is generated from those declarations (``zhongshu.runtime.topology``), and the
parties that are not services (the CLI, the runtime's dead-lettering, other teams) are declared
here."""

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from zhongshu.contracts import streams, subjects

Json = dict[str, Any]


class Channel(msgspec.Struct, frozen=True):
    """One kind of subject on the bus: its address with `{parameters}`, the stream that stores
    it and the event types it carries (by class name)."""

    id: str
    address: str
    stream: streams.StreamSpec
    description: str
    messages: tuple[str, ...]
    parameters: Mapping[str, Json]

    @property
    def pattern(self) -> str:
        """The NATS filter of every subject of this channel: each `{parameter}` is one token
        (`*`), except a last `{path}`, which is one or more (`>`)."""
        tokens = self.address.split(".")
        wild = ["*" if t.startswith("{") else t for t in tokens]
        if tokens[-1] == "{path}":
            wild[-1] = ">"
        return ".".join(wild)

    def carries(self, subject: str) -> bool:
        return subjects.subject_matches(self.pattern, subject)


_PLATFORM: Final[Json] = {"description": "Chat platform.", "enum": ["dingtalk", "feishu"]}
_TENANT: Final[Json] = {"description": "Tenant key from the configuration (sanitized token)."}

CHANNELS: Final[tuple[Channel, ...]] = (
    Channel(
        "chatInbound",
        "chat.inbound.{platform}.{tenant}",
        streams.CHAT_INBOUND,
        "Normalized platform events, from ingress after signature check and dedupe.",
        ("MessageReceived", "CardActionReceived", "BotMembershipChanged", "PlatformEventReceived"),
        {"platform": _PLATFORM, "tenant": _TENANT},
    ),
    Channel(
        "chatCommands",
        "chat.command.{platform}.{tenant}",
        streams.CHAT_COMMANDS,
        "Commands the router accepted for the agent.",
        ("CommandRequested",),
        {"platform": _PLATFORM, "tenant": _TENANT},
    ),
    Channel(
        "chatQueries",
        "chat.query.{platform}.{tenant}",
        streams.CHAT_QUERIES,
        "Free-form questions the router classified.",
        ("QueryRequested",),
        {"platform": _PLATFORM, "tenant": _TENANT},
    ),
    Channel(
        "chatReplies",
        "chat.reply.{platform}.{tenant}",
        streams.REPLIES,
        "Replies and streamed reply chunks for the notifier to send.",
        ("ReplyGenerated",),
        {"platform": _PLATFORM, "tenant": _TENANT},
    ),
    Channel(
        "alerts",
        "alert.{level}.{source}",
        streams.ALERTS,
        "Alerts at three levels, from the watchdog, the router, dead-lettering and other teams.",
        ("AlertRaised",),
        {
            "level": {"description": "Severity.", "enum": ["warning", "error", "critical"]},
            "source": {"description": "What raised it (service, team or host; sanitized)."},
        },
    ),
    Channel(
        "alertActions",
        "alerting.action.{key}",
        streams.ALERTS,
        "Acknowledge, Silence or Resolve pressed on an alert card by an admin; the router "
        "publishes, the watchdog applies.",
        ("AlertActionRequested",),
        {"key": {"description": "The alert's key (contracts.events.alert_key)."}},
    ),
    Channel(
        "alertStates",
        "alerting.state.{key}",
        streams.ALERTS,
        "One alert's lifecycle, in order: raised (a new episode, or back after a silence), "
        "acknowledged, silenced, resolved (by a person or because its condition cleared). The "
        "notifier redraws the alert's cards in place.",
        ("AlertStateChanged",),
        {"key": {"description": "The alert's key (contracts.events.alert_key)."}},
    ),
    Channel(
        "taskRequested",
        "task.requested.{tenant}",
        streams.TASKS,
        "Tasks to run: from the gateway, the agent, and (sourced from SCHEDULES) schedule firings.",
        ("TaskRequested",),
        {"tenant": _TENANT},
    ),
    Channel(
        "taskEvents",
        "task.event.{tenant}.{taskId}",
        streams.TASKS,
        "One task's lifecycle in order: started, progressed..., completed or failed.",
        ("TaskStarted", "TaskProgressed", "TaskToolCalled", "TaskCompleted", "TaskFailed"),
        {"tenant": _TENANT, "taskId": {"description": "The task's id (sanitized)."}},
    ),
    Channel(
        "schedules",
        "schedule.{tenant}.{scheduleId}",
        streams.SCHEDULES,
        "One schedule per subject: its last message is the schedule (ADR-51). Its body is the "
        "TaskRequested every firing carries; publishing again replaces it, purging the subject "
        "removes it.",
        ("TaskScheduled",),
        {"tenant": _TENANT, "scheduleId": {"description": "The schedule's id (sanitized)."}},
    ),
    Channel(
        "scheduleFirings",
        "schedule.{tenant}.{scheduleId}.fired",
        streams.SCHEDULES,
        "Where the server publishes each firing (a schedule can only target its own stream). "
        "TASKS sources these subjects as task.requested.{tenant}; nobody consumes them here.",
        ("TaskScheduleFired",),
        {"tenant": _TENANT, "scheduleId": {"description": "The schedule's id (sanitized)."}},
    ),
    Channel(
        "events",
        "events.{team}.{path}",
        streams.EVENTS,
        "Any CloudEvent other teams and devices publish, for event-triggered rules.",
        ("ExternalEvent",),
        {
            "team": {"description": "Publishing team (sanitized)."},
            "path": {"description": "One or more further dot-separated tokens of their choice."},
        },
    ),
    Channel(
        "deliveries",
        "delivery.{status}.{platform}.{tenant}",
        streams.DELIVERIES,
        "What happened to each outgoing send.",
        ("ReplyDelivered", "ReplyDeliveryFailed"),
        {
            "status": {"description": "Outcome.", "enum": ["delivered", "failed", "ambiguous"]},
            "platform": _PLATFORM,
            "tenant": _TENANT,
        },
    ),
    Channel(
        "callbackDeliveries",
        "delivery.{status}.callback.{tenant}",
        streams.DELIVERIES,
        "The delivery log of subscriptions: each signed callback POST and its outcome.",
        ("CallbackDelivered", "CallbackDeliveryFailed"),
        {
            "status": {"description": "Outcome.", "enum": ["delivered", "failed"]},
            "tenant": _TENANT,
        },
    ),
    Channel(
        "workflowRuns",
        "workflow.run.{tenant}.{runId}",
        streams.WORKFLOWS,
        "One workflow run's events in order: started, each step's start and end, the end.",
        (
            "RunStarted",
            "StepStarted",
            "StepCompleted",
            "StepFailed",
            "RunCompleted",
            "RunFailed",
        ),
        {"tenant": _TENANT, "runId": {"description": "The run's id (= its task id)."}},
    ),
    Channel(
        "workflowSteps",
        "workflow.step.{tenant}.{runId}.{step}",
        streams.WORKFLOWS,
        "The work of one step, taken by a step worker and acked when the step is done.",
        ("StepRequested",),
        {
            "tenant": _TENANT,
            "runId": {"description": "The run's id."},
            "step": {"description": "The step's id in its workflow."},
        },
    ),
    Channel(
        "audit",
        "audit.{tenant}.{kind}",
        streams.AUDIT,
        "Security-relevant actions.",
        ("AuditRecorded",),
        {"tenant": _TENANT, "kind": {"description": "Kind of action, e.g. `chat_denied`."}},
    ),
    Channel(
        "deadLetters",
        "dlq.{stream}.{consumer}",
        streams.DLQ,
        "Messages a consumer gave up on after max_deliver attempts, with their last error.",
        ("DeadLetter",),
        {
            "stream": {"description": "Source stream name, lower-cased."},
            "consumer": {"description": "Durable consumer name (sanitized)."},
        },
    ),
)


def channel(channel_id: str) -> Channel:
    """The channel with this id (a KeyError names the unknown id)."""
    return _BY_ID[channel_id]


_BY_ID: Final[Mapping[str, Channel]] = {c.id: c for c in CHANNELS}

CHAT_INBOUND: Final = channel("chatInbound")
CHAT_COMMANDS: Final = channel("chatCommands")
CHAT_QUERIES: Final = channel("chatQueries")
CHAT_REPLIES: Final = channel("chatReplies")
ALERTS: Final = channel("alerts")
ALERT_ACTIONS: Final = channel("alertActions")
ALERT_STATES: Final = channel("alertStates")
TASK_REQUESTED: Final = channel("taskRequested")
TASK_EVENTS: Final = channel("taskEvents")
SCHEDULES: Final = channel("schedules")
SCHEDULE_FIRINGS: Final = channel("scheduleFirings")
EVENTS: Final = channel("events")
DELIVERIES: Final = channel("deliveries")
CALLBACK_DELIVERIES: Final = channel("callbackDeliveries")
WORKFLOW_RUNS: Final = channel("workflowRuns")
WORKFLOW_STEPS: Final = channel("workflowSteps")
AUDIT: Final = channel("audit")
DEAD_LETTERS: Final = channel("deadLetters")


class Party(msgspec.Struct, frozen=True):
    """What one party sends and receives, by channel id."""

    description: str
    send: tuple[str, ...] = ()
    receive: tuple[str, ...] = ()


# Parties that are not services: their side cannot be read off a Service declaration.
EXTERNAL_PARTIES: Final[Mapping[str, Party]] = {
    "runtime": Party(
        "The consume loop every service runs (libs/runtime): dead-letters and alerts.",
        send=("deadLetters", "alerts"),
    ),
    "cli": Party(
        "`zhongshu dlq` inspects and replays dead letters; `config push`, `dlq replay`, "
        "`token create` and `archive restore` are audited.",
        send=("audit",),
        receive=("deadLetters",),
    ),
    "other-teams": Party("Publishers outside zhongshu.", send=("events", "alerts")),
}
