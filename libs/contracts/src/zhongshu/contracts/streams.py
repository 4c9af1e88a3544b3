"""The JetStream streams and key-value buckets of the bus, declared once.

`zhongshu provision` creates or updates exactly these; services bind to them and never create
their own. Streams do not overlap, so every subject has exactly one home (`stream_for_subject`).

Limits are backstops, not the archive: the archiver copies every stream to object storage
monthly, so `max_age` only has to outlive a month partition plus time to notice a broken
archiver. Byte caps keep one runaway producer from filling the disk that every other stream
shares; hitting one discards the oldest messages (`discard: old`). JetStream reserves every
cap from the server's storage budget (`max_file_store`, 75 % of free disk by default), so the
server must be given room for their sum (`TOTAL_RESERVED_BYTES`).
"""

from typing import Final, Literal

import msgspec

from zhongshu.contracts import subjects

_DAY: Final = 24 * 60 * 60.0
_HOUR: Final = 60 * 60.0
_GIB: Final = 1024**3


class SubjectTransformSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Rename subjects as they are copied from a source stream (NATS `SubjectTransform`)."""

    src: str
    dest: str


class StreamSourceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Copy (some of) another stream's messages into this one (NATS `StreamSource`).

    Only the subjects matched by a transform's `src` are copied, renamed to its `dest`.
    """

    name: str
    subject_transforms: tuple[SubjectTransformSpec, ...] = ()


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One stream as `zhongshu provision` creates it (retention `limits`, explicit acks)."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_s: float
    """0 = unlimited."""
    max_bytes: int
    """-1 = unlimited."""
    duplicate_window_s: float = 120.0
    max_msgs_per_subject: int = -1
    allow_msg_schedules: bool = False
    allow_msg_ttl: bool = False
    storage: Literal["file", "memory"] = "file"
    discard: Literal["old", "new"] = "old"
    """What a full stream does: drop its oldest messages, or refuse new ones."""
    sources: tuple[StreamSourceSpec, ...] = ()
    """Other streams this one copies messages from, besides its own `subjects`."""
    archived: bool = True
    """Whether the archiver copies it to the cold archive (short-lived telemetry is not)."""


class KeyValueSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One JetStream key-value bucket as `zhongshu provision` creates it."""

    bucket: str
    description: str
    ttl_s: float = 0.0
    """Age after which a key's value expires; 0 = never."""
    history: int = 1
    max_bytes: int = -1
    allow_msg_ttl: bool = False
    """Lets writers give single keys their own TTL (`Nats-TTL`)."""


# --- Streams --------------------------------------------------------------------------------------
# The duplicate window stays at the 2-minute default everywhere: it only has to cover a
# publisher's own retries after a lost PubAck. Retries hours later (Feishu retries for ~7 h) are
# caught by DEDUPE_KV, and a window of hours would hold a msg-id index of that size in memory.

CHAT_INBOUND: Final = StreamSpec(
    name="CHAT_INBOUND",
    subjects=(subjects.ALL_CHAT_INBOUND,),
    description="Normalized DingTalk and Feishu events (chat.inbound.<platform>.<tenant>)",
    # 30 d: replaying a day of traffic through a fixed router stays possible; the archive
    # covers older months. Chat messages are small, so 10 GiB is millions of events.
    max_age_s=30 * _DAY,
    max_bytes=10 * _GIB,
)

CHAT_COMMANDS: Final = StreamSpec(
    name="CHAT_COMMANDS",
    subjects=(subjects.ALL_CHAT_COMMANDS,),
    description="Commands the router hands to the agent (chat.command.<platform>.<tenant>)",
    # Same horizon as its input; at most one command per inbound message, so half the bytes.
    max_age_s=30 * _DAY,
    max_bytes=5 * _GIB,
)

CHAT_QUERIES: Final = StreamSpec(
    name="CHAT_QUERIES",
    subjects=(subjects.ALL_CHAT_QUERIES,),
    description="Questions the router hands on (chat.query.<platform>.<tenant>)",
    max_age_s=30 * _DAY,
    max_bytes=5 * _GIB,
)

ALERTS: Final = StreamSpec(
    name="ALERTS",
    subjects=(subjects.ALL_ALERTS, subjects.ALL_ALERTING),
    description="Warning, error and critical alerts from chat, the watchdog and other teams, "
    "and their lifecycle (alerting.action.<key>, alerting.state.<key>)",
    # Alerts are rare and small; 1 GiB is plenty unless something floods, and then the newest
    # alerts matter more than the oldest.
    max_age_s=30 * _DAY,
    max_bytes=1 * _GIB,
)

TASKS: Final = StreamSpec(
    name="TASKS",
    subjects=(subjects.ALL_TASK_REQUESTED, subjects.ALL_TASK_EVENTS),
    description="Task lifecycle, event-sourced: task.requested.<tenant>, task.event.<tenant>.<id>",
    # 30 d of task history to rebuild read models from; streamed progress chunks make this the
    # largest stream next to REPLIES, hence 10 GiB.
    max_age_s=30 * _DAY,
    max_bytes=10 * _GIB,
    # Schedule firings arrive here from SCHEDULES as task.requested.<tenant> (see SCHEDULES).
    sources=(
        StreamSourceSpec(
            name="SCHEDULES",
            subject_transforms=(
                SubjectTransformSpec(
                    src=subjects.ALL_SCHEDULE_FIRINGS,
                    dest="task.requested.{{wildcard(1)}}",
                ),
            ),
        ),
    ),
)

SCHEDULES: Final = StreamSpec(
    name="SCHEDULES",
    subjects=("schedule.>",),
    description=(
        "Cron and delayed task requests (schedule.<tenant>.<id>) and their firings "
        "(schedule.<tenant>.<id>.fired, sourced into TASKS as task.requested.<tenant>)"
    ),
    # ADR-51: a schedule is the last message on its own subject, and the server only fires into
    # a subject of the same stream (it rejects other targets with err 10190, checked on
    # nats-server 2.15.1). TASKS cannot simply be the target, and SCHEDULES cannot also claim
    # task.requested.> because streams must not overlap. So each schedule fires into
    # schedule.<tenant>.<id>.fired, and TASKS sources those subjects renamed to
    # task.requested.<tenant>: the agent sees one subject whether a task came from the gateway
    # or a schedule. The schedule's body is a TaskRequested envelope and is copied verbatim into
    # every firing; the server drops Nats-Msg-Id and the Nats-Schedule* headers from firings and
    # adds Nats-Scheduler and Nats-Schedule-Next, which the agent uses to give each firing its
    # own task id (ids.schedule_fire_id).
    allow_msg_schedules=True,
    # One message per subject: the current schedule, and the latest firing of each schedule
    # (kept only until TASKS has copied it).
    max_msgs_per_subject=1,
    # No age limit: a schedule removed by max_age silently stops firing (ADR-51 "Stream
    # Retention Interaction"); a schedule that should end carries its own Nats-TTL.
    max_age_s=0,
    allow_msg_ttl=True,
    # Two messages per schedule keep this small. The server refuses `discard: new` on a stream
    # with message schedules (err 10052), so a full stream would drop its oldest messages: the
    # cap is far above any real number of schedules, and provisioning never shrinks it.
    max_bytes=1 * _GIB,
)

EVENTS: Final = StreamSpec(
    name="EVENTS",
    subjects=(subjects.ALL_EVENTS,),
    description="What other teams and devices publish for event rules (events.<team>.>)",
    # Producers we do not control: the byte cap is what protects everybody else's streams.
    max_age_s=30 * _DAY,
    max_bytes=10 * _GIB,
)

REPLIES: Final = StreamSpec(
    name="REPLIES",
    subjects=(subjects.ALL_CHAT_REPLIES,),
    description="Replies for the notifier to send (chat.reply.<platform>.<tenant>)",
    # Streaming replies are many chunks per answer, so this is a high-volume stream.
    max_age_s=30 * _DAY,
    max_bytes=10 * _GIB,
)

DELIVERIES: Final = StreamSpec(
    name="DELIVERIES",
    subjects=(subjects.ALL_DELIVERIES,),
    description="Outcome of every outgoing send (delivery.<status>.<platform>.<tenant>)",
    max_age_s=30 * _DAY,
    max_bytes=5 * _GIB,
)

AUDIT: Final = StreamSpec(
    name="AUDIT",
    subjects=(subjects.ALL_AUDIT,),
    description="Security-relevant actions (audit.<tenant>.<kind>)",
    # Kept on the bus for 400 d: audit trails are commonly required for at least a year (China's
    # Cybersecurity Law asks >= 6 months of network logs), plus a month of slack to archive.
    # Low volume, so 10 GiB is effectively a guard, not a limit.
    max_age_s=400 * _DAY,
    max_bytes=10 * _GIB,
)

DLQ: Final = StreamSpec(
    name="DLQ",
    subjects=(subjects.ALL_DLQ,),
    description="Messages consumers gave up on, with their last error (dlq.<stream>.<consumer>)",
    # 30 d to inspect and replay (`zhongshu dlq`); a flood of poison messages should not grow
    # without bound, so 1 GiB.
    max_age_s=30 * _DAY,
    max_bytes=1 * _GIB,
)

WORKFLOWS: Final = StreamSpec(
    name="WORKFLOWS",
    subjects=(subjects.ALL_WORKFLOW,),
    description=(
        "Workflow runs: step work (workflow.step.<tenant>.<run>.<step>) and run events "
        "(workflow.run.<tenant>.<run>)"
    ),
    # Run history lives in the warm tier (projector) and the archive; 30 d on the bus lets a
    # crashed engine resume any run and the projector rebuild a month.
    max_age_s=30 * _DAY,
    max_bytes=5 * _GIB,
)

TRACES: Final = StreamSpec(
    name="TRACES",
    subjects=(subjects.ALL_TRACES,),
    description=(
        "Finished spans (trace.span.<trace id>) and the ids that find them "
        "(trace.index.<digest>), for `zhongshu trace` when no collector is configured"
    ),
    # Telemetry for the last hours, not a record: in memory, because a file stream fsyncs every
    # message under `sync_interval: always` (~100 us of the server's CPU per span), and a span
    # is worth less than that. A restart of nats-server forgets them; the cap bounds the RAM.
    storage="memory",
    max_age_s=3 * _HOUR,
    max_bytes=256 * 1024**2,
    archived=False,
)

STREAMS: Final[tuple[StreamSpec, ...]] = (
    CHAT_INBOUND,
    CHAT_COMMANDS,
    CHAT_QUERIES,
    ALERTS,
    TASKS,
    SCHEDULES,
    EVENTS,
    REPLIES,
    DELIVERIES,
    AUDIT,
    DLQ,
    WORKFLOWS,
    TRACES,
)
"""Every stream, in provisioning order: SCHEDULES may exist before or after TASKS (a source
that does not exist yet is retried by the server)."""


def stream_for_subject(subject: str) -> StreamSpec:
    """The stream that stores a concrete subject; `KeyError` if none does."""
    for stream in STREAMS:
        for pattern in stream.subjects:
            if subjects.subject_matches(pattern, subject):
                return stream
    raise KeyError(
        f"no zhongshu stream stores subject {subject!r}; "
        "build subjects with zhongshu.contracts.subjects, whose subjects all have a stream"
    )


# --- Key-value buckets ----------------------------------------------------------------------------

DEDUPE_KV: Final = KeyValueSpec(
    bucket="dedupe",
    description="Platform event ids already accepted (atomic create): catches late retries",
    # Feishu retries an unacknowledged event for up to ~7 h and the design asks for >= 24 h;
    # 48 h also covers a weekend-long outage of the hub followed by platform redelivery.
    ttl_s=48 * _HOUR,
    # Small keys; a cap keeps a replay storm from filling the disk (an atomic create then fails
    # and ingress answers 503, so the platform retries later).
    max_bytes=1 * _GIB,
)

CONFIG_KV: Final = KeyValueSpec(
    bucket="config",
    description="Running configuration pushed by `zhongshu config push`; services watch it",
    # Five revisions: enough to see and roll back recent pushes.
    history=5,
    max_bytes=64 * 1024**2,
)

LEASES_KV: Final = KeyValueSpec(
    bucket="leases",
    description="Short leases with fencing tokens (the key's revision), renewed while work runs",
    # A worker that stops renewing loses its lease within 15 s; holders renew every few seconds.
    ttl_s=15.0,
    max_bytes=64 * 1024**2,
)

DELIVERY_STATE_KV: Final = KeyValueSpec(
    bucket="delivery_state",
    description="State of each outgoing reply (pending, sending, delivered, failed, ambiguous)",
    # 7 d: far past any redelivery of a reply, and the same horizon as the hot Redis tier.
    ttl_s=7 * _DAY,
    max_bytes=5 * _GIB,
)

ARCHIVE_KV: Final = KeyValueSpec(
    bucket="archive",
    description=(
        "Per stream: the last sequence copied to the cold archive, and the chunk being written"
    ),
    # One small key per stream, rewritten twice per archived chunk. No TTL: losing a key would
    # make the archiver start that stream over from the oldest message still on the bus.
    # History 5 shows an operator the last few commits (`nats kv history archive <STREAM>`).
    history=5,
    max_bytes=16 * 1024**2,
)

WORKFLOWS_KV: Final = KeyValueSpec(
    bucket="workflows",
    description="Workflow definitions (JSON WorkflowDefinition) under <tenant>.<id>",
    # A run records the revision it read; ten revisions let an operator see recent edits.
    history=10,
    max_bytes=256 * 1024**2,
)

TRIGGERS_KV: Final = KeyValueSpec(
    bucket="triggers",
    description="Event triggers (JSON TriggerDefinition) under <tenant>.<id>; the engine watches",
    history=5,
    max_bytes=64 * 1024**2,
)

SUBSCRIPTIONS_KV: Final = KeyValueSpec(
    bucket="subscriptions",
    description="Callback subscriptions (JSON Subscription) under <tenant>.<id>; no secrets",
    history=5,
    max_bytes=64 * 1024**2,
)

HEARTBEATS_KV: Final = KeyValueSpec(
    bucket="heartbeats",
    description="Every running service instance under <service>.<instance>, rewritten every few "
    "seconds (contracts.heartbeats); a graceful stop deletes its key",
    # A day: a process killed for good leaves its key, and the watchdog reports it down long
    # before; after a day the key goes and an open "down" alert stays open on its own record.
    ttl_s=24 * _HOUR,
    max_bytes=64 * 1024**2,
)

ALERTS_KV: Final = KeyValueSpec(
    bucket="alerts",
    description="The lifecycle state of each alert under its alert_key (raised, acknowledged, "
    "silenced, resolved), written by the watchdog with compare-and-set",
    # No TTL: an alert silenced or acknowledged for weeks must not lose its state. Five
    # revisions show an operator the recent transitions (`nats kv history alerts <key>`).
    history=5,
    max_bytes=256 * 1024**2,
)

GRANTS_KV: Final = KeyValueSpec(
    bucket="grants",
    description="Roles granted to chat users (JSON Grant) under <tenant>.<app>.<user>.<role>; "
    "the router and ingress watch it, the gateway and chat admin commands write it",
    # No TTL: a grant lasts until revoked. Five revisions show who granted what recently.
    history=5,
    max_bytes=64 * 1024**2,
)

REVOKED_TOKENS_KV: Final = KeyValueSpec(
    bucket="revoked_tokens",
    description="Revoked API tokens (JSON RevokedToken) under their jti; the gateway watches it",
    # Each key carries its own TTL (the token's remaining life): after it, the token's `exp`
    # refuses it anyway. No bucket-wide age: a team's API key may live a year, and its
    # revocation must not expire before it; a jti of unknown expiry stays until deleted.
    allow_msg_ttl=True,
    max_bytes=64 * 1024**2,
)

KV_BUCKETS: Final[tuple[KeyValueSpec, ...]] = (
    DEDUPE_KV,
    CONFIG_KV,
    LEASES_KV,
    DELIVERY_STATE_KV,
    ARCHIVE_KV,
    WORKFLOWS_KV,
    TRIGGERS_KV,
    SUBSCRIPTIONS_KV,
    HEARTBEATS_KV,
    ALERTS_KV,
    GRANTS_KV,
    REVOKED_TOKENS_KV,
)

TOTAL_RESERVED_BYTES: Final = sum(
    cap
    for cap in (
        *(s.max_bytes for s in STREAMS if s.storage == "file"),
        *(b.max_bytes for b in KV_BUCKETS),
    )
    if cap > 0
)
"""File storage JetStream reserves for all of the above: a server with less refuses to create
them (err 10047, "insufficient storage resources available"). Memory streams (TRACES) reserve
from the server's memory budget instead."""
