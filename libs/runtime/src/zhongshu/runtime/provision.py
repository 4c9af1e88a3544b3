"""Create or update every stream and KV bucket declared in contracts, idempotently.

Safe changes (more subjects, longer retention, more bytes, replicas) are applied; changes that
would drop stored events or cannot be applied in place are refused with an explanation, unless
the operator explicitly allows data loss."""

from __future__ import annotations

import copy
import enum
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
    StreamInfo,
    StreamSource,
    SubjectTransform,
)
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from zhongshu.contracts.streams import KeyValueSpec, StreamSpec


class Action(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    kind: str  # "stream" | "kv"
    name: str
    action: Action
    detail: str = ""


def _seconds(value: float | None) -> float:
    return float(value or 0)


def _limit(value: int | None) -> int:
    """JetStream uses -1 (and sometimes 0/None) for 'no limit'."""
    return -1 if value is None or value <= 0 else value


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=StorageType.FILE if spec.storage == "file" else StorageType.MEMORY,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        # The server rejects a duplicate window longer than the stream's max age.
        duplicate_window=(
            min(spec.duplicate_window_s, spec.max_age_s)
            if spec.max_age_s
            else spec.duplicate_window_s
        ),
        num_replicas=replicas,
        discard=DiscardPolicy.OLD if spec.discard == "old" else DiscardPolicy.NEW,
        sources=[
            StreamSource(
                name=source.name,
                subject_transforms=[
                    SubjectTransform(src=t.src, dest=t.dest) for t in source.subject_transforms
                ]
                or None,
            )
            for source in spec.sources
        ]
        or None,
        allow_msg_schedules=spec.allow_msg_schedules or None,
        allow_msg_ttl=spec.allow_msg_ttl or None,
    )


def _shrinks(current: float, desired: float) -> bool:
    """True when a limit moves from unlimited to limited, or to a smaller limit."""
    unlimited = (current <= 0, desired <= 0)
    if unlimited == (True, True) or unlimited[1]:
        return False
    return unlimited[0] or desired < current


def plan_stream_change(current: StreamConfig, desired: StreamConfig) -> tuple[list[str], list[str]]:
    """Compare a live stream with what contracts declare: (changes, reasons to refuse)."""
    changes: list[str] = []
    refusals: list[str] = []
    cur_subjects, new_subjects = set(current.subjects or []), set(desired.subjects or [])
    if cur_subjects != new_subjects:
        removed = sorted(cur_subjects - new_subjects)
        if removed:
            refusals.append(
                f"subjects {removed} would be removed: events stored on them could no longer be "
                "read or replayed by subject"
            )
        changes.append(f"subjects {sorted(cur_subjects)} -> {sorted(new_subjects)}")
    if current.storage != desired.storage:
        refusals.append(
            f"storage {current.storage} -> {desired.storage} cannot change in place; "
            "back up (zhongshu archive), delete and recreate the stream"
        )
    limits = (
        ("max_age", _seconds(current.max_age), _seconds(desired.max_age), "s"),
        ("max_bytes", _limit(current.max_bytes), _limit(desired.max_bytes), " bytes"),
        (
            "max_msgs_per_subject",
            _limit(current.max_msgs_per_subject),
            _limit(desired.max_msgs_per_subject),
            "",
        ),
    )
    for name, cur, new, unit in limits:
        if cur != new:
            changes.append(f"{name} {cur:g}{unit} -> {new:g}{unit}")
            if _shrinks(cur, new):
                refusals.append(
                    f"{name} would shrink from {cur:g}{unit} to {new:g}{unit}, deleting stored "
                    "events that may not be archived yet"
                )
    if _seconds(current.duplicate_window) != _seconds(desired.duplicate_window):
        changes.append(
            f"duplicate_window {_seconds(current.duplicate_window):g}s -> "
            f"{_seconds(desired.duplicate_window):g}s"
        )
    if bool(current.allow_msg_schedules) != bool(desired.allow_msg_schedules):
        if current.allow_msg_schedules:
            refusals.append("allow_msg_schedules cannot be turned off: schedules would stop firing")
        changes.append(f"allow_msg_schedules -> {bool(desired.allow_msg_schedules)}")
    if bool(current.allow_msg_ttl) != bool(desired.allow_msg_ttl):
        if current.allow_msg_ttl:
            refusals.append("allow_msg_ttl cannot be turned off once enabled")
        changes.append(f"allow_msg_ttl -> {bool(desired.allow_msg_ttl)}")
    if (current.num_replicas or 1) != (desired.num_replicas or 1):
        changes.append(f"replicas {current.num_replicas or 1} -> {desired.num_replicas}")
    if _sources_key(current) != _sources_key(desired):
        changes.append(f"sources {_sources_key(current)} -> {_sources_key(desired)}")
    if current.discard != desired.discard:
        changes.append(f"discard {current.discard} -> {desired.discard}")
    if (current.description or "") != (desired.description or ""):
        changes.append("description")
    return changes, refusals


def _sources_key(config: StreamConfig) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return sorted(
        (
            source.name,
            tuple((t.src, t.dest) for t in source.subject_transforms or ()),
        )
        for source in config.sources or ()
    )


async def _stream_info(js: JetStreamContext, name: str) -> StreamInfo | None:
    try:
        return await js.stream_info(name)
    except NotFoundError:
        return None


async def _ensure_stream(
    js: JetStreamContext, kind: str, desired: StreamConfig, allow_data_loss: bool
) -> Outcome:
    assert desired.name is not None
    info = await _stream_info(js, desired.name)
    if info is None:
        await js.add_stream(desired)
        return Outcome(kind, desired.name, Action.CREATED)
    changes, refusals = plan_stream_change(info.config, desired)
    if not changes:
        return Outcome(kind, desired.name, Action.UNCHANGED)
    if refusals and not allow_data_loss:
        return Outcome(kind, desired.name, Action.REFUSED, "; ".join(refusals))
    merged = info.config
    for field in (
        "subjects",
        "description",
        "max_age",
        "max_bytes",
        "max_msgs_per_subject",
        "duplicate_window",
        "num_replicas",
        "discard",
        "sources",
        "allow_msg_schedules",
        "allow_msg_ttl",
    ):
        setattr(merged, field, getattr(desired, field))
    await js.update_stream(merged)
    return Outcome(kind, desired.name, Action.UPDATED, "; ".join(changes))


def kv_stream_name(bucket: str) -> str:
    return f"KV_{bucket}"


async def _ensure_kv(
    js: JetStreamContext, spec: KeyValueSpec, replicas: int, allow_data_loss: bool
) -> Outcome:
    name = kv_stream_name(spec.bucket)
    info = await _stream_info(js, name)
    if info is None:
        await js.create_key_value(
            KeyValueConfig(
                bucket=spec.bucket,
                description=spec.description,
                history=spec.history,
                ttl=spec.ttl_s or None,
                max_bytes=spec.max_bytes,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )
        if spec.allow_msg_ttl:
            created = await js.stream_info(name)
            created.config.allow_msg_ttl = True
            await js.update_stream(created.config)
        return Outcome("kv", spec.bucket, Action.CREATED)
    current = info.config
    desired = copy.deepcopy(current)
    desired.max_age = spec.ttl_s
    desired.max_msgs_per_subject = spec.history
    desired.max_bytes = spec.max_bytes
    desired.num_replicas = replicas
    desired.description = spec.description
    desired.allow_msg_ttl = spec.allow_msg_ttl or current.allow_msg_ttl
    changes, refusals = plan_stream_change(current, desired)
    if not changes:
        return Outcome("kv", spec.bucket, Action.UNCHANGED)
    if refusals and not allow_data_loss:
        return Outcome("kv", spec.bucket, Action.REFUSED, "; ".join(refusals))
    await js.update_stream(desired)
    return Outcome("kv", spec.bucket, Action.UPDATED, "; ".join(changes))


async def provision(
    js: JetStreamContext,
    streams: Iterable[StreamSpec],
    buckets: Iterable[KeyValueSpec] = (),
    *,
    replicas: int = 1,
    allow_data_loss: bool = False,
) -> list[Outcome]:
    """Bring the server in line with contracts. Never raises for a refused change: the outcome
    says why, so the caller can report every problem at once (see :func:`refused`)."""
    outcomes = []
    for spec in streams:
        outcomes.append(
            await _server_may_refuse(
                "stream",
                spec.name,
                _ensure_stream(js, "stream", stream_config(spec, replicas), allow_data_loss),
            )
        )
    for bucket in buckets:
        outcomes.append(
            await _server_may_refuse(
                "kv", bucket.bucket, _ensure_kv(js, bucket, replicas, allow_data_loss)
            )
        )
    return outcomes


async def _server_may_refuse(kind: str, name: str, change: Awaitable[Outcome]) -> Outcome:
    try:
        return await change
    except APIError as exc:
        return Outcome(kind, name, Action.REFUSED, f"the server rejected it: {exc.description}")


def refused(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.action is Action.REFUSED]
