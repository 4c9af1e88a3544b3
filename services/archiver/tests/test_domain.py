"""The archiver's pure parts, without a broker: names and months, the line format, chunk
objects, manifests, the lag arithmetic, restore targets and settings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from pydantic import ValidationError

from zhongshu.archiver.adapters.objectstore import redact_store_url, resolve_local_url
from zhongshu.archiver.drain import ack_position, parse_crash_at
from zhongshu.archiver.lag import StreamLimits, level_for, measure
from zhongshu.archiver.layout import (
    BadMonth,
    Month,
    MonthOf,
    months_between,
    object_key,
    parse_manifest_key,
    parse_object_key,
)
from zhongshu.archiver.lines import PublishTimes, decode_lines, encode_line, event_time
from zhongshu.archiver.manifest import Manifest, decode, encode
from zhongshu.archiver.restore import RestoreError, into, projections
from zhongshu.archiver.runner import stream_names
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.archiver.writer import Chunk, decompress, prepare
from zhongshu.runtime.errors import ConfigurationError

SHANGHAI = ZoneInfo("Asia/Shanghai")


# --- names and months ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2025-1", "2025/01", "25-01", "2025-13", "2025-00", "", "jan"])
def test_a_month_that_is_not_yyyy_mm_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(BadMonth, match=r"YYYY-MM|no such month"):
        Month.parse(text)


def test_months_between_spans_years_and_refuses_a_reversed_range() -> None:
    assert [str(m) for m in months_between(Month(2024, 11), Month(2025, 2))] == [
        "2024-11",
        "2024-12",
        "2025-01",
        "2025-02",
    ]
    with pytest.raises(BadMonth, match="before"):
        months_between(Month(2025, 2), Month(2025, 1))


def test_object_names_sort_in_sequence_order_and_parse_back() -> None:
    keys = [object_key("TASKS", Month(2025, 1), a, b) for a, b in [(9, 10), (100, 200), (11, 99)]]
    assert sorted(keys) == [keys[0], keys[2], keys[1]]
    assert keys[1] == "TASKS/2025/01/00000000000000000100-00000000000000000200.jsonl.zst"
    parsed = parse_object_key(keys[1])
    assert parsed is not None
    assert (parsed.stream, parsed.month, parsed.first_seq, parsed.last_seq) == (
        "TASKS",
        Month(2025, 1),
        100,
        200,
    )
    assert parse_object_key("TASKS/2025/01/manifest.json") is None
    assert parse_manifest_key("TASKS/2025/01/manifest.json") == ("TASKS", Month(2025, 1))


def test_month_of_an_event_is_decided_in_the_configured_time_zone() -> None:
    month_of = MonthOf(SHANGHAI)
    evening_utc = datetime(2025, 1, 31, 20, 0, tzinfo=UTC)  # 04:00 on Feb 1 in Shanghai
    assert month_of(evening_utc.timestamp()) == Month(2025, 2)
    assert MonthOf(UTC)(evening_utc.timestamp()) == Month(2025, 1)
    # The cached bounds do not leak into other months (a late event, then back).
    assert month_of(datetime(2024, 12, 31, 15, 59, tzinfo=UTC).timestamp()) == Month(2024, 12)
    assert month_of(datetime(2024, 12, 31, 16, 0, tzinfo=UTC).timestamp()) == Month(2025, 1)


# --- lines -----------------------------------------------------------------------------------


def test_an_envelope_is_embedded_as_json_and_comes_back_byte_for_byte() -> None:
    payload = b'{"id":"e1","time":"2025-01-15T12:00:00Z","data":{"text":"hi"}}'
    moment, is_json = event_time(payload)
    assert moment == datetime(2025, 1, 15, 12, tzinfo=UTC)
    published = PublishTimes().format(1_736_942_400_123_456_789)
    line = encode_line(
        7, "chat.inbound.feishu.acme", published, {"Nats-Msg-Id": "e1"}, payload, is_json
    )
    assert b"\n" not in line
    assert b'"event":{"id":"e1"' in line
    (back,) = decode_lines(line + b"\n")
    assert (back.seq, back.subject, back.headers) == (
        7,
        "chat.inbound.feishu.acme",
        {"Nats-Msg-Id": "e1"},
    )
    assert back.published == "2025-01-15T12:00:00.123456789Z"
    assert back.payload() == payload


@pytest.mark.parametrize(
    ("payload", "is_json", "embedded"),
    [
        (b"\x00\xffbinary", False, False),
        (b'{\n  "pretty": true\n}', True, False),
        (b"[1, 2, 3]", True, True),
        (b'{"time": 5}', True, True),
        (b"", False, False),
    ],
)
def test_other_payloads_are_kept_exactly_and_fall_back_to_publish_time(
    payload: bytes, is_json: bool, embedded: bool
) -> None:
    moment, json_seen = event_time(payload)
    assert moment is None
    assert json_seen is is_json
    line = encode_line(1, "events.x", "2025-01-01T00:00:00.000000000Z", None, payload, json_seen)
    (back,) = decode_lines(line)
    assert back.payload() == payload
    assert back.data_b64 == (None if embedded else base64.b64encode(payload).decode())


def test_a_naive_event_time_is_taken_as_utc() -> None:
    moment, _ = event_time(b'{"time": "2025-03-01T00:30:00"}')
    assert moment == datetime(2025, 3, 1, 0, 30, tzinfo=UTC)


def test_ack_subjects_give_sequence_and_publish_time_in_both_forms() -> None:
    assert ack_position("$JS.ACK.TASKS.archiver-TASKS.1.42.40.1736942400000000000.7") == (
        42,
        1_736_942_400_000_000_000,
    )
    long_form = "$JS.ACK.hub.ACCHASH.TASKS.archiver-TASKS.1.42.40.1736942400000000000.7.rnd"
    assert ack_position(long_form) == (42, 1_736_942_400_000_000_000)


# --- chunks, objects, manifests ----------------------------------------------------------------


def _chunk() -> Chunk:
    chunk = Chunk("TASKS", 10)
    for seq, ts, month in [
        (10, 1.0e9, Month(2025, 2)),
        (11, 0.5e9, Month(2025, 1)),
        (13, 1.1e9, Month(2025, 2)),
    ]:
        chunk.add(seq, month, ts, f'{{"seq":{seq}}}'.encode())
    chunk.cover(14)
    return chunk


def test_a_chunk_becomes_one_object_per_month_named_by_its_lines_and_covering_its_range() -> None:
    prepared = prepare(_chunk(), UTC, 3)
    assert [p.entry.key.split("/", 1)[1] for p in prepared] == [
        "2025/01/00000000000000000011-00000000000000000011.jsonl.zst",
        "2025/02/00000000000000000010-00000000000000000013.jsonl.zst",
    ]
    feb = prepared[1].entry
    assert (feb.count, feb.chunk_first, feb.chunk_last) == (2, 10, 14)
    assert decompress(prepared[1].data) == b'{"seq":10}\n{"seq":13}\n'


def test_writing_the_same_chunk_twice_gives_identical_bytes() -> None:
    first, second = prepare(_chunk(), UTC, 3), prepare(_chunk(), UTC, 3)
    assert [(p.entry, p.data) for p in first] == [(p.entry, p.data) for p in second]


def test_recording_a_chunk_again_replaces_its_entries_instead_of_adding_them() -> None:
    manifest = Manifest(stream="TASKS", month="2025-02", time_zone="UTC")
    entries = [p.entry for p in prepare(_chunk(), UTC, 3) if p.month == Month(2025, 2)]
    other = msgspec.structs.replace(
        entries[0], key="k0", first_seq=1, last_seq=9, chunk_first=1, chunk_last=9
    )
    manifest.with_chunk(1, 9, [other])
    manifest.with_chunk(10, 14, entries)
    manifest.with_chunk(10, 14, entries)
    assert [o.key for o in manifest.objects] == ["k0", entries[0].key]
    assert decode(encode(manifest), "m").objects == manifest.objects


# --- lag ----------------------------------------------------------------------------------------


def _limits(**changes: float) -> StreamLimits:
    values = {
        "first_seq": 1,
        "last_seq": 100,
        "messages": 100,
        "bytes": 100_000,
        "max_age_s": 1000.0,
        "max_bytes": -1,
        "max_msgs": -1,
    }
    values.update(changes)
    return StreamLimits(**values)  # type: ignore[arg-type]


def test_lag_is_the_oldest_unarchived_age_over_max_age() -> None:
    lag = measure("S", 40, _limits(), oldest_age_s=600)
    assert (lag.messages, lag.ratio, lag.limit) == (60, 0.6, "max_age")
    assert level_for(lag.ratio, 0.5, 0.8) == "warning"
    assert level_for(0.8, 0.5, 0.8) == "error"
    assert level_for(0.49, 0.5, 0.8) is None


def test_a_byte_cap_counts_when_it_is_closer_than_max_age() -> None:
    lag = measure("S", 0, _limits(max_bytes=110_000), oldest_age_s=10)
    assert lag.limit == "max_bytes"
    assert lag.ratio == pytest.approx(100_000 / 110_000)


def test_nothing_unarchived_is_no_lag_even_past_max_age() -> None:
    assert measure("S", 100, _limits(), oldest_age_s=None).ratio == 0
    # Messages already gone from the stream are not lag either (they are reported as lost).
    assert measure("S", 0, _limits(first_seq=101, last_seq=100, messages=0), None).messages == 0


# --- restore targets, settings, URLs --------------------------------------------------------------


def test_restore_targets_keep_or_replace_the_subject() -> None:
    assert into("restored.>").subject_for("chat.inbound.x.y") == "restored.chat.inbound.x.y"
    assert into("one.subject").subject_for("chat.inbound.x.y") == "one.subject"
    assert projections("REPLAY").subject_for("task.event.a.b") == "replay.replay.task.event.a.b"
    for bad in [">", "a.*", "a..b", "a.>.b", "", "a b"]:
        with pytest.raises(RestoreError):
            into(bad)


def test_settings_name_the_variable_and_accept_comma_separated_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZHONGSHU_ARCHIVE_STREAMS", "TASKS, EVENTS")
    monkeypatch.setenv("ZHONGSHU_ARCHIVE_TZ", "Asia/Shanghai")
    settings = ArchiverSettings()
    assert settings.archive_streams == ["TASKS", "EVENTS"]
    assert settings.zone == SHANGHAI
    assert settings.object_store_url == "file://./data/archive"
    with pytest.raises(ValidationError, match="unknown time zone"):
        ArchiverSettings(archive_tz="Mars/Olympus")
    with pytest.raises(ValidationError, match="below"):
        ArchiverSettings(archive_lag_warning_ratio=0.9, archive_lag_error_ratio=0.8)


def test_crash_points_are_checked() -> None:
    assert parse_crash_at("after-objects:2") == ("after-objects", 2)
    assert parse_crash_at(None) is None
    with pytest.raises(ValueError, match="crash step"):
        parse_crash_at("whenever")


def test_store_urls_lose_their_secrets_and_local_paths_become_absolute(tmp_path: object) -> None:
    shown = redact_store_url("s3://u:pw@bucket/p?endpoint=http://h:9&secret_access_key=s3cr3t")
    assert "s3cr3t" not in shown
    assert "pw" not in shown
    assert "endpoint=http://h:9" in shown
    resolved = resolve_local_url("file://./data/archive", base=__import__("pathlib").Path("/srv"))
    assert resolved == "file:///srv/data/archive"


def test_unknown_streams_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown stream\(s\) NOPE; known: CHAT_INBOUND"):
        stream_names(ArchiverSettings(archive_streams=["TASKS", "NOPE"]))
    assert stream_names(ArchiverSettings(archive_streams=["TASKS", "TASKS"])) == ["TASKS"]
    assert "DLQ" in stream_names(ArchiverSettings())
    assert "TRACES" not in stream_names(ArchiverSettings())  # hours of telemetry, not a record
