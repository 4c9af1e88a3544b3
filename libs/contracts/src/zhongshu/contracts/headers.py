"""NATS message header names that zhongshu reads or writes, each with the reason it exists.

NATS headers are case-sensitive on the wire: always use these constants, never literals.
"""

from typing import Final

# --- JetStream publish headers (server-interpreted) ---------------------------------------------

MSG_ID: Final = "Nats-Msg-Id"
"""Deduplication id: JetStream drops a second publish with the same id inside the stream's
duplicate window. Every zhongshu publish sets it (see `ids.derive_msg_id`)."""

EXPECTED_STREAM: Final = "Nats-Expected-Stream"
"""The publish fails unless the subject is stored by this stream: catches a subject that a
misconfigured stream set would silently route elsewhere."""

EXPECTED_LAST_SEQUENCE: Final = "Nats-Expected-Last-Sequence"
"""Optimistic concurrency on the whole stream: the publish fails unless the stream's last
sequence is this value."""

EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
"""Optimistic concurrency per subject: the publish fails unless the last message on this subject
has this sequence (0 = the subject must be empty). Used to replace or cancel a schedule only if
it is still the one we read."""

EXPECTED_LAST_MSG_ID: Final = "Nats-Expected-Last-Msg-Id"
"""The publish fails unless the stream's last message carried this `Nats-Msg-Id`."""

MSG_TTL: Final = "Nats-TTL"
"""Per-message time to live (e.g. `30s`, `1h`, `never`); needs `allow_msg_ttl` on the stream."""

ROLLUP: Final = "Nats-Rollup"
"""`sub` replaces every earlier message on the subject with this one. The server adds it to
schedule messages by itself (ADR-51)."""

# --- Message schedules (ADR-51, nats-server >= 2.12; time zones >= 2.14) -----------------------

SCHEDULE: Final = "Nats-Schedule"
"""The schedule: `@at <RFC 3339>`, `@every <go duration, >= 1s>`, a 6-field cron
(`sec min hour dom month dow`) or `@hourly`/`@daily`/... . One schedule per subject."""

SCHEDULE_TARGET: Final = "Nats-Schedule-Target"
"""Subject each firing is published to. The server rejects (err 10190) a target that is not a
subject of the schedule's own stream; see `streams.SCHEDULES` for how firings reach TASKS."""

SCHEDULE_TIME_ZONE: Final = "Nats-Schedule-Time-Zone"
"""IANA zone for cron schedules (e.g. `Asia/Shanghai`); only valid on cron schedules, not on
`@at`/`@every`. Omit for UTC (an empty value is rejected)."""

SCHEDULE_TTL: Final = "Nats-Schedule-TTL"
"""Sets `Nats-TTL` on each generated message. zhongshu does not use it: the TTL would travel with
the firing into TASKS and expire a task request from the event log of record."""

SCHEDULE_SOURCE: Final = "Nats-Schedule-Source"
"""Publish the last message of this subject instead of the schedule's own body (sampling)."""

SCHEDULE_ROLLUP: Final = "Nats-Schedule-Rollup"
"""Sets `Nats-Rollup: sub` on each generated message."""

SCHEDULER: Final = "Nats-Scheduler"
"""Set by the server on each firing: the subject of the schedule that produced it. Sent by a
client together with `SCHEDULE_NEXT: purge` to cancel that schedule atomically."""

SCHEDULE_NEXT: Final = "Nats-Schedule-Next"
"""Set by the server on each firing: the RFC 3339 time of the next firing, or `purge` for a
one-shot `@at` schedule. Distinct per firing, so it names the firing (`ids.schedule_fire_id`)."""

STREAM_SOURCE: Final = "Nats-Stream-Source"
"""Set by the server on a message copied in from another stream (`StreamSpec.sources`)."""

# --- W3C trace context ---------------------------------------------------------------------------

TRACEPARENT: Final = "traceparent"
"""W3C trace context: one trace runs from the webhook to the platform send."""

TRACESTATE: Final = "tracestate"
"""W3C vendor-specific trace state, carried along with `traceparent`."""

# --- Content -------------------------------------------------------------------------------------

CONTENT_TYPE: Final = "Content-Type"
"""Media type of the payload; zhongshu sets `CLOUDEVENTS_JSON`."""

CLOUDEVENTS_JSON: Final = "application/cloudevents+json"
"""Value of `CONTENT_TYPE`: the body is a CloudEvents 1.0 structured-mode JSON envelope."""

# --- Late platform retries (ours) ----------------------------------------------------------------

LATE_COPY: Final = "Zhongshu-Late-Copy"
"""`1` on an inbound event that the platform created longer ago than the stream's duplicate
window reaches (a late retry, or delivery after an outage): it may repeat an event stored
earlier, so the first consumer to act on it waits for its durable claim before sending anything
(`runtime.once`). Set by ingress; events without it are claimed alongside their outputs."""

# --- Dead-letter queue (ours) ---------------------------------------------------------------------
# A dead-lettered message keeps its original body and headers; these describe why it is here.

DLQ_ERROR: Final = "Zhongshu-Error"
"""The last error, one line (`ExceptionType: message`), truncated by the publisher."""

DLQ_STREAM: Final = "Zhongshu-Dlq-Stream"
"""Stream the message was consumed from."""

DLQ_CONSUMER: Final = "Zhongshu-Dlq-Consumer"
"""Durable consumer that gave up on it."""

DLQ_SUBJECT: Final = "Zhongshu-Dlq-Subject"
"""Original subject: `zhongshu dlq replay` publishes the body back to it."""

DLQ_SEQUENCE: Final = "Zhongshu-Dlq-Sequence"
"""Original stream sequence (decimal); with `DLQ_STREAM` it identifies the message, so it is also
the basis of the dead letter's `Nats-Msg-Id`."""

DLQ_DELIVERIES: Final = "Zhongshu-Dlq-Deliveries"
"""How many times the consumer received it before giving up (decimal)."""

DLQ_FAILED_AT: Final = "Zhongshu-Dlq-Failed-At"
"""When it was dead-lettered, RFC 3339 UTC."""
