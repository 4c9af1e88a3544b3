"""``zhongshu dlq list`` and ``replay`` on a real JetStream: a dead letter goes back to its
original subject with its own headers, once, and leaves the DLQ."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js.errors import NotFoundError
from typer.testing import CliRunner

from zhongshu.cli.main import app
from zhongshu.cli.provision_cmd import provision_url
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.streams import AUDIT, CHAT_INBOUND, DLQ
from zhongshu.devstack import NatsServer

runner = CliRunner()
ORIGINAL_SUBJECT = subjects.chat_inbound("feishu", "acme")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PAYLOAD = b'{"id": "evt-1", "text": "hello"}'


@pytest.fixture
def url(private_nats_server: NatsServer) -> str:
    asyncio.run(provision_url(private_nats_server.url, replicas=1, allow_data_loss=False))
    return private_nats_server.url


def dead_letter(url: str, *, consumer: str = "echo", original_seq: int = 7) -> int:
    """Publish what the consume loop publishes when it gives up on a message."""

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            ack = await nc.jetstream().publish(
                subjects.dlq(CHAT_INBOUND.name, consumer),
                PAYLOAD,
                headers={
                    H.MSG_ID: f"dlq:{CHAT_INBOUND.name}:{consumer}:{original_seq}",
                    H.CONTENT_TYPE: H.CLOUDEVENTS_JSON,
                    H.TRACEPARENT: TRACEPARENT,
                    H.DLQ_ERROR: "ValueError: cannot decode message",
                    H.DLQ_STREAM: CHAT_INBOUND.name,
                    H.DLQ_CONSUMER: consumer,
                    H.DLQ_SUBJECT: ORIGINAL_SUBJECT,
                    H.DLQ_SEQUENCE: str(original_seq),
                    H.DLQ_DELIVERIES: "5",
                    H.DLQ_FAILED_AT: "2025-01-02T03:04:05+00:00",
                },
            )
            return int(ack.seq)
        finally:
            await nc.close()

    return asyncio.run(go())


def stream_messages(url: str, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    async def go() -> list[tuple[str, bytes, dict[str, str]]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except NotFoundError:
                    continue
                found.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
            return found
        finally:
            await nc.close()

    return asyncio.run(go())


def cli(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"ZHONGSHU_NATS_URL": url, "COLUMNS": "200"})
    return result.exit_code, result.output


def test_dlq_list_shows_where_a_message_came_from_and_why_it_failed(url: str) -> None:
    seq = dead_letter(url)

    code, out = cli(url, "dlq", "list", "--json")
    assert code == 0, out
    [letter] = json.loads(out)
    assert letter["dlq_seq"] == seq
    assert letter["stream"] == CHAT_INBOUND.name
    assert letter["consumer"] == "echo"
    assert letter["subject"] == ORIGINAL_SUBJECT
    assert letter["seq"] == 7
    assert letter["deliveries"] == 5
    assert letter["failed_at"] == "2025-01-02T03:04:05+00:00"
    assert letter["error"] == "ValueError: cannot decode message"
    assert letter["payload"] == PAYLOAD.decode()

    code, out = cli(url, "dlq", "list")
    assert code == 0, out
    assert ORIGINAL_SUBJECT in out
    assert "ValueError: cannot decode message" in out


def test_dlq_list_filters_by_consumer(url: str) -> None:
    dead_letter(url, consumer="echo", original_seq=1)
    other = dead_letter(url, consumer="router", original_seq=2)

    code, out = cli(url, "dlq", "list", "--consumer", "router", "--json")
    assert code == 0, out
    assert [d["dlq_seq"] for d in json.loads(out)] == [other]


def test_replay_republishes_to_the_original_subject_and_empties_the_dlq(url: str) -> None:
    dlq_seq = dead_letter(url)

    code, out = cli(url, "dlq", "replay", "--all")
    assert code == 0, out
    assert "replayed 1" in out

    [(subject, data, hdrs)] = stream_messages(url, CHAT_INBOUND.name)
    assert subject == ORIGINAL_SUBJECT
    assert data == PAYLOAD
    assert hdrs[H.MSG_ID] == f"replay:{dlq_seq}"
    assert hdrs[H.TRACEPARENT] == TRACEPARENT
    assert not [h for h in hdrs if h.startswith("Zhongshu-")]
    assert stream_messages(url, DLQ.name) == []
    [(audit_subject, audit_data, _)] = stream_messages(url, AUDIT.name)
    assert audit_subject == "audit._.dlq"
    audited = wire.decode(audit_data, AuditRecorded).data
    assert (audited.action, audited.target, audited.outcome) == (
        "dlq.replayed",
        f"{DLQ.name}:{dlq_seq}",
        "succeeded",
    )
    assert audited.labels["subject"] == ORIGINAL_SUBJECT

    code, out = cli(url, "dlq", "list")
    assert code == 0
    assert "the DLQ is empty" in out


def test_replaying_twice_within_the_duplicate_window_stores_once(url: str) -> None:
    dlq_seq = dead_letter(url)

    code, out = cli(url, "dlq", "replay", "--seq", str(dlq_seq), "--keep")
    assert code == 0, out
    code, out = cli(url, "dlq", "replay", "--seq", str(dlq_seq))
    assert code == 0, out
    assert "1 already stored" in out

    assert len(stream_messages(url, CHAT_INBOUND.name)) == 1
    assert stream_messages(url, DLQ.name) == []


def test_replaying_a_missing_sequence_fails_and_says_so(url: str) -> None:
    code, out = cli(url, "dlq", "replay", "--seq", "99")
    assert code == 1
    assert "no message 99 in DLQ" in " ".join(out.split())


def test_replay_needs_seq_or_all(url: str) -> None:
    code, out = cli(url, "dlq", "replay")
    assert code == 2
    assert "--seq" in out


def test_a_replay_that_cannot_be_stored_stays_in_the_dlq(url: str) -> None:
    dlq_seq = dead_letter(url)

    code, out = cli(url, "dlq", "replay", "--seq", str(dlq_seq), "--to", "nowhere.at.all")
    assert code == 1
    assert "could not be replayed" in out
    assert len(stream_messages(url, DLQ.name)) == 1
