"""Definitions operators and API clients create, stored as JSON in JetStream KV buckets (see
`streams`): workflows (`workflows`), event triggers (`triggers`) and subscriptions
(`subscriptions`), each under the key `<tenant>.<id>`. The gateway writes them; the task engine
and the notifier read and watch them. A KV revision is a definition's version.

Schedules are not here: a schedule is a message in the SCHEDULES stream (ADR 0002)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Final

import msgspec

from zhongshu.contracts.events.tasks import DeliveryTarget
from zhongshu.contracts.events.workflows import StepKind

ID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Ids of definitions and steps: safe as KV key tokens and as subject tokens."""


def definition_key(tenant: str, definition_id: str) -> str:
    """The KV key of a definition (tenant and id must both match ``ID_PATTERN``)."""
    for name, value in (("tenant", tenant), ("id", definition_id)):
        if not ID_PATTERN.fullmatch(value):
            raise ValueError(f"{name} {value!r} must match {ID_PATTERN.pattern}")
    return f"{tenant}.{definition_id}"


TASK_CALLBACKS_ID: Final = "_tasks"
"""The pseudo-subscription whose secret signs the callbacks a task request names itself
(`TaskRequested.deliver_to` with `kind: callback`)."""

SIGNATURE_HEADER: Final = "X-Zhongshu-Signature"
"""`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`."""
TIMESTAMP_HEADER: Final = "X-Zhongshu-Timestamp"
"""Unix seconds when the callback was signed; receivers reject old ones (replays)."""
EVENT_ID_HEADER: Final = "X-Zhongshu-Event-Id"
"""The posted envelope's id: the receiver's idempotency key (a retry posts it again)."""
SUBSCRIPTION_HEADER: Final = "X-Zhongshu-Subscription"


def subscription_secret(callback_key: bytes, tenant: str, subscription_id: str) -> str:
    """The signing secret of one subscription, derived from the hub's callback key
    (`ZHONGSHU_CALLBACK_KEY`) so it is never stored: the gateway shows it once when the
    subscription is created, the notifier derives it again for every delivery."""
    material = f"zhongshu-callback:{tenant}:{subscription_id}".encode()
    return hmac.new(callback_key, material, hashlib.sha256).hexdigest()


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Zhongshu-Signature` value of a callback body."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_callback(
    secret: str, timestamp: int, body: bytes, signature: str, *, now: float, max_skew_s: float = 300
) -> bool:
    """What a receiver checks: the signature (constant-time) and the timestamp's age."""
    if abs(now - timestamp) > max_skew_s:
        return False
    return hmac.compare_digest(sign_callback(secret, timestamp, body), signature)


class TaskTemplate(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a trigger (or a schedule) asks for each time it fires: a prompt, a command or a
    workflow with inputs, and where the result goes. ``{{event.<path>}}`` in ``prompt`` and in
    string ``inputs`` is replaced by the triggering event's field."""

    prompt: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    workflow: str | None = None
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    deliver_to: tuple[DeliveryTarget, ...] = ()


class StepDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of a workflow.

    - ``collect``: ``config.url`` (GET, or ``config.method`` with ``config.body``), the response
      becomes the output (``status``, ``text`` or ``json``).
    - ``infer``: ``config.prompt``, run by the agent as a task; ``{{steps.<id>.<field>}}`` and
      ``{{run.<input>}}`` are substituted from the outputs it needs.
    - ``notify``: ``config.targets`` (chats: ``{app, chat}``; callbacks: ``{url}``) and
      ``config.text``; sent by the engine itself, never dependent on the model calling a tool.
    """

    id: str
    kind: StepKind
    needs: tuple[str, ...] = ()
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    retries: int = 0
    timeout_s: float = 60.0


class WorkflowDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A DAG of steps; ``needs`` are its edges. Parallel branches are steps with the same needs;
    a join is a step that needs several."""

    id: str
    tenant: str
    description: str = ""
    steps: tuple[StepDefinition, ...]


class TriggerDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Create a task when an event on ``subject`` (a filter under ``events.>``) satisfies
    ``condition``, a JMESPath expression evaluated on the event's CloudEvents JSON (empty =
    every event)."""

    id: str
    tenant: str
    subject: str
    condition: str = ""
    task: TaskTemplate
    enabled: bool = True


class Subscription(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """POST the tenant's task and run events whose `type` matches one of ``event_types``
    (``*`` matches any suffix: ``zhongshu.task.*``) to ``url``, signed with the
    subscription's secret (derived from the hub's callback key and the id, never stored)."""

    id: str
    tenant: str
    url: str
    event_types: tuple[str, ...] = ("zhongshu.task.*", "zhongshu.workflow.*")
    enabled: bool = True
    description: str = ""
