"""One realistic instance of every event, with fixed ids and times.

They document the wire format (the AsyncAPI document embeds them) and give tests in every
package a valid event to start from: `msgspec.structs.replace(example(MessageReceived), text=...)`.
"""

from datetime import UTC, datetime
from typing import Final, TypeVar, cast

from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope, make_envelope
from zhongshu.contracts.events import (
    ALL_EVENTS,
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    REPLY_HANDLE_FEISHU_MESSAGE,
    AlertActionRequested,
    AlertActor,
    AlertRaised,
    AlertStateChanged,
    AttachmentRef,
    AuditRecorded,
    BotMembershipChanged,
    CallbackDelivered,
    CallbackDeliveryFailed,
    CardActionReceived,
    CommandRequested,
    DeliveryTarget,
    Event,
    Mention,
    MessageReceived,
    PlatformEventReceived,
    QueryRequested,
    ReplyDelivered,
    ReplyDeliveryFailed,
    ReplyGenerated,
    ReplyHandle,
    RunCompleted,
    RunFailed,
    RunStarted,
    Sender,
    StepCompleted,
    StepFailed,
    StepRequested,
    StepStarted,
    TaskCompleted,
    TaskFailed,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
    TaskToolCalled,
    WorkflowRef,
)

E = TypeVar("E", bound=Event)

AT: Final = datetime(2025, 3, 21, 9, 30, 0, tzinfo=UTC)
TENANT: Final = "acme"
_RUN: Final = "0195b2a4c0e07e5a9d6f0c1b2a3d4e60"

_FEISHU_SENDER = Sender(
    id="ou_7d8a6e6df7621556ce0d21922b676706",
    name="Li Lei",
    open_id="ou_7d8a6e6df7621556ce0d21922b676706",
    union_id="on_8ed6aa67826108097d9ee143816345",
    user_id="e33ggbyz",
)
_FEISHU_HANDLE = ReplyHandle(
    kind=REPLY_HANDLE_FEISHU_MESSAGE,
    message_id="om_dc13264520392913993dd051dba21dcf",
    chat_id="oc_5ad11d72b830411d72b836c20",
)

_MESSAGE = MessageReceived(
    platform="feishu",
    app="acme-feishu",
    tenant=TENANT,
    chat_id="oc_5ad11d72b830411d72b836c20",
    chat_kind="group",
    sender=_FEISHU_SENDER,
    platform_event_id="5e3702a84e847582be8db7fb73283c02",
    platform_message_id="om_dc13264520392913993dd051dba21dcf",
    reply_handle=_FEISHU_HANDLE,
    text="/summarize 3d",
    message_kind="text",
    mentions=(Mention(id="ou_bot", name="zhongshu", is_bot_self=True),),
    mentions_bot=True,
    sent_at=AT,
    raw_event_type="im.message.receive_v1",
)

_DINGTALK_MESSAGE = MessageReceived(
    platform="dingtalk",
    app="acme-dingtalk",
    tenant=TENANT,
    chat_id="cidPeZ8fAkQ0Xk4Yi+Jc8LM0w==",
    chat_kind="p2p",
    sender=Sender(id="manager4220", name="Han Meimei", staff_id="manager4220"),
    platform_event_id="msgLcz5E9JVFqYLEhCWOQYsxg==",
    platform_message_id="msgLcz5E9JVFqYLEhCWOQYsxg==",
    reply_handle=ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url="https://oapi.dingtalk.com/robot/sendBySession?session=c5b1ea2b",
        chat_id="cidPeZ8fAkQ0Xk4Yi+Jc8LM0w==",
        expires_at=datetime(2025, 3, 21, 11, 0, 0, tzinfo=UTC),
        chat_kind="p2p",
        user_id="manager4220",
    ),
    text="what failed in last night's deploy?",
    attachments=(AttachmentRef(kind="file", key="dl_code_1", name="deploy.log", size=20480),),
)

_EXAMPLES: Final[dict[type[Event], Event]] = {
    MessageReceived: _MESSAGE,
    BotMembershipChanged: BotMembershipChanged(
        platform="feishu",
        app="acme-feishu",
        tenant=TENANT,
        chat_id="oc_5ad11d72b830411d72b836c20",
        change="added",
        platform_event_id="5e3702a84e847582be8db7fb73283c02",
        operator=_FEISHU_SENDER,
        chat_name="ops",
        occurred_at=datetime(2025, 3, 21, 9, 30, 0, tzinfo=UTC),
    ),
    PlatformEventReceived: PlatformEventReceived(
        platform="feishu",
        app="acme-feishu",
        tenant=TENANT,
        event_type="contact.user.created_v3",
        platform_event_id="f7984f25108f8137722bb63cee927e66",
        payload={"object": {"open_id": "ou_7dab8a3d3cdcc9da365777c7ad535d62", "name": "Li Lei"}},
        occurred_at=datetime(2025, 3, 21, 9, 30, 0, tzinfo=UTC),
    ),
    CardActionReceived: CardActionReceived(
        platform="feishu",
        app="acme-feishu",
        tenant=TENANT,
        chat_id="oc_5ad11d72b830411d72b836c20",
        user=_FEISHU_SENDER,
        action={"approve": "deploy-42"},
        platform_event_id="f7984f25108f8137722bb63cee927e66",
        reply_handle=_FEISHU_HANDLE,
        action_tag="button",
        message_id="om_x100b4f1c2ff0b0a0c0e6b1d2a4f3e9d",
        token="c-295ee57216a5dc9de90fefd0aadb4b1d7d337bc6",
    ),
    CommandRequested: CommandRequested(
        command="summarize",
        args=("3d",),
        text="3d",
        message=_MESSAGE,
        sender_roles=("admin",),
    ),
    QueryRequested: QueryRequested(
        message=_DINGTALK_MESSAGE, text="what failed in last night's deploy?"
    ),
    ReplyGenerated: ReplyGenerated(
        reply_id="5e3702a84e847582be8db7fb73283c02:router:agent",
        in_reply_to="5e3702a84e847582be8db7fb73283c02:router",
        platform="feishu",
        app="acme-feishu",
        tenant=TENANT,
        chat_id="oc_5ad11d72b830411d72b836c20",
        reply_handle=_FEISHU_HANDLE,
        kind="markdown",
        text="**3 days**: 2 deploys, 1 rollback",
        chunk_index=2,
        final=True,
        stream_id="5e3702a84e847582be8db7fb73283c02:router:agent",
    ),
    ReplyDelivered: ReplyDelivered(
        reply_id="5e3702a84e847582be8db7fb73283c02:router:agent",
        platform="feishu",
        delivered_at=AT,
        platform_message_id="om_5ce6d572455d361153b7cb51da133945",
        app="acme-feishu",
        chat_id="oc_5ad11d72b830411d72b836c20",
        chunk_index=2,
    ),
    ReplyDeliveryFailed: ReplyDeliveryFailed(
        reply_id="msgLcz5E9JVFqYLEhCWOQYsxg==:router:agent",
        platform="dingtalk",
        reason="timed out after the request was sent",
        retryable=False,
        ambiguous=True,
        attempts=1,
        app="acme-dingtalk",
        chat_id="cidPeZ8fAkQ0Xk4Yi+Jc8LM0w==",
    ),
    AlertRaised: AlertRaised(
        level="error",
        source="watchdog",
        title="notifier is down",
        detail="no heartbeat from notifier for 60 s",
        tenant=TENANT,
        labels={"service": "notifier"},
        dedupe_key="service-down:notifier",
    ),
    AlertActionRequested: AlertActionRequested(
        key="5f1c0e2a9b7d4c3e8a6f1b2d",
        action="acknowledge",
        actor=AlertActor(
            id="ou_7d8a6e6df7621556ce0d21922b676706",
            name="Li Lei",
            platform="feishu",
            app="ops-bot",
        ),
        tenant=TENANT,
        chat_id="oc_5ad11d72b830411d72b836c20",
        message_id="om_dc13264520392913993dd051dba21dcf",
    ),
    AlertStateChanged: AlertStateChanged(
        key="5f1c0e2a9b7d4c3e8a6f1b2d",
        state="acknowledged",
        level="error",
        source="watchdog",
        title="notifier is down",
        detail="no heartbeat from notifier for 60 s",
        tenant=TENANT,
        labels={"service": "notifier"},
        actor=AlertActor(
            id="ou_7d8a6e6df7621556ce0d21922b676706",
            name="Li Lei",
            platform="feishu",
            app="ops-bot",
        ),
        raised_at=AT,
        occurrences=3,
    ),
    TaskRequested: TaskRequested(
        task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f",
        tenant=TENANT,
        requested_by="schedule:daily-report",
        origin="schedule",
        prompt="Summarize yesterday's alerts for the ops channel.",
        deliver_to=(
            DeliveryTarget(kind="chat", app="acme-feishu", chat_id="oc_5ad11d72b830411d72b836c20"),
            DeliveryTarget(kind="callback", url="https://ops.example.com/hooks/zhongshu"),
        ),
        schedule_id="daily-report",
        timeout_s=120.0,
    ),
    TaskStarted: TaskStarted(task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f", worker="agent-7f9c"),
    TaskProgressed: TaskProgressed(
        task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f",
        seq=3,
        chunk="Yesterday there were 4 alerts",
        step="summarize",
    ),
    TaskToolCalled: TaskToolCalled(
        task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f",
        seq=2,
        tool="task_status",
        arguments='{"task_id": "0195b2a4"}',
        result='{"status": "completed"}',
        duration_ms=3,
    ),
    TaskCompleted: TaskCompleted(
        task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f",
        result_text="Yesterday there were 4 alerts, all resolved.",
        result_data={"alerts": 4, "open": 0},
        duration_ms=5230,
    ),
    TaskFailed: TaskFailed(
        task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f",
        reason="model endpoint returned 429 five times",
        error_code="llm_rate_limited",
        retryable=True,
    ),
    AuditRecorded: AuditRecorded(
        actor="ou_7d8a6e6df7621556ce0d21922b676706",
        action="chat.denied",
        target="app:acme-feishu",
        outcome="denied",
        tenant=TENANT,
        detail="sender not in access.users",
    ),
    RunStarted: RunStarted(
        run_id=_RUN,
        tenant=TENANT,
        workflow="incident-report",
        version=3,
        inputs={"incident": "INC-1024"},
        requested_by="api:ops-portal",
        steps=("fetch-logs", "fetch-metrics", "summarize", "notify"),
    ),
    StepRequested: StepRequested(
        run_id=_RUN,
        tenant=TENANT,
        workflow="incident-report",
        step="summarize",
        kind="infer",
        config={"prompt": "Summarize the incident from these logs: {{steps.fetch-logs.text}}"},
        inputs={"fetch-logs": {"status": 200, "text": "..."}, "run": {"incident": "INC-1024"}},
        timeout_s=60.0,
        retries=2,
    ),
    StepStarted: StepStarted(run_id=_RUN, step="fetch-logs", attempt=1),
    StepCompleted: StepCompleted(
        run_id=_RUN, step="fetch-logs", output={"status": 200, "text": "..."}, duration_ms=240
    ),
    StepFailed: StepFailed(
        run_id=_RUN, step="fetch-metrics", reason="HTTP 503", attempt=1, final=False
    ),
    RunCompleted: RunCompleted(
        run_id=_RUN, outputs={"summarize": {"text": "Disk full on db-2."}}, duration_ms=5400
    ),
    RunFailed: RunFailed(run_id=_RUN, reason="step fetch-logs: HTTP 404", step="fetch-logs"),
    CallbackDelivered: CallbackDelivered(
        subscription_id="ops-portal",
        tenant=TENANT,
        event_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f:completed",
        event_type="zhongshu.task.task_completed.v1",
        status_code=204,
        delivered_at=datetime(2025, 3, 1, 8, 0, 6, tzinfo=UTC),
    ),
    CallbackDeliveryFailed: CallbackDeliveryFailed(
        subscription_id="ops-portal",
        tenant=TENANT,
        event_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e5f:completed",
        event_type="zhongshu.task.task_completed.v1",
        reason="HTTP 410 Gone: the subscriber refused",
        status_code=410,
        attempts=1,
    ),
}

_WORKFLOW_TASK: Final = TaskRequested(
    task_id="0195b2a4c0e07e5a9d6f0c1b2a3d4e60",
    tenant=TENANT,
    requested_by="api:ops-portal",
    origin="api",
    workflow=WorkflowRef(name="incident-report", version="3"),
    inputs={"incident": "INC-1024", "notify": True},
)


def example(event_cls: type[E]) -> E:
    """The example instance of `event_cls`."""
    return cast(E, _EXAMPLES[event_cls])


def all_examples() -> tuple[Event, ...]:
    """Every example, at least one per event class (some classes have a second variant)."""
    extra: tuple[Event, ...] = (_DINGTALK_MESSAGE, _WORKFLOW_TASK)
    return tuple(_EXAMPLES[cls] for cls in ALL_EVENTS) + extra


def example_envelope(event: E) -> Envelope[E]:
    """`event` wrapped as its publisher would, with a fixed id and time."""
    return make_envelope(
        event,
        id=f"example:{type(event).TYPE}",
        source="zhongshu/examples",
        tenant=TENANT,
        conversation_id="oc_5ad11d72b830411d72b836c20",
        correlation_id="5e3702a84e847582be8db7fb73283c02",
        time=AT,
    )


def example_subject(event: Event) -> str:
    """The subject `event` would be published on."""
    match event:
        case (
            MessageReceived()
            | CardActionReceived()
            | BotMembershipChanged()
            | PlatformEventReceived()
        ):
            return subjects.chat_inbound(event.platform, event.tenant)
        case CommandRequested():
            return subjects.chat_command(event.origin.platform, event.origin.tenant)
        case QueryRequested():
            return subjects.chat_query(event.message.platform, event.message.tenant)
        case ReplyGenerated():
            return subjects.chat_reply(event.platform, event.tenant)
        case ReplyDelivered():
            return subjects.delivery("delivered", event.platform, TENANT)
        case ReplyDeliveryFailed():
            status = "ambiguous" if event.ambiguous else "failed"
            return subjects.delivery(status, event.platform, TENANT)
        case AlertRaised():
            return subjects.alert(event.level, event.source)
        case AlertActionRequested():
            return subjects.alert_action(event.key)
        case AlertStateChanged():
            return subjects.alert_state(event.key)
        case TaskRequested():
            return subjects.task_requested(event.tenant)
        case TaskStarted() | TaskProgressed() | TaskToolCalled() | TaskCompleted() | TaskFailed():
            return subjects.task_event(TENANT, event.task_id)
        case AuditRecorded():
            return subjects.audit(event.tenant, event.action)
        case StepRequested():
            return subjects.workflow_step(event.tenant, event.run_id, event.step)
        case (
            RunStarted()
            | StepStarted()
            | StepCompleted()
            | StepFailed()
            | RunCompleted()
            | RunFailed()
        ):
            return subjects.workflow_run(TENANT, event.run_id)
        case CallbackDelivered():
            return subjects.delivery("delivered", "callback", event.tenant)
        case CallbackDeliveryFailed():
            return subjects.delivery("failed", "callback", event.tenant)
    raise KeyError(f"no example subject for {type(event).__name__}")
