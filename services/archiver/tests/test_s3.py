"""The same round trip against an S3-compatible store: moto's server mode on 127.0.0.1 (a real
HTTP S3 API, credentials from the usual AWS environment variables)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer
from nats.js.api import StreamConfig

from services.archiver.tests.archiver_testing import (
    Bus,
    archived_lines,
    publish_events,
    settings,
    start_archiver,
    stop_quietly,
    stream_payloads,
    wait_archived,
)
from zhongshu.archiver import restore, verify
from zhongshu.archiver.adapters.objectstore import StoreError, check_reachable, open_store
from zhongshu.archiver.layout import Month

BUCKET = "zhongshu-archive"
EVENTS = 2_000


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


async def test_s3_round_trip_archives_verifies_and_restores(bus: Bus, s3_endpoint: str) -> None:
    url = f"s3://{BUCKET}/archive?endpoint={s3_endpoint}&region=us-east-1"
    payloads = await publish_events(bus.js, "TASKS", EVENTS)
    service = await start_archiver(settings(bus.url, url, ["TASKS"]))
    try:
        await wait_archived(bus.js, ["TASKS"])
    finally:
        await stop_quietly(service)

    store = open_store(url)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=BUCKET)[
            "Contents"
        ]
    ]
    assert "archive/TASKS/2025/01/manifest.json" in keys
    assert any(k.startswith("archive/TASKS/2025/02/") and k.endswith(".jsonl.zst") for k in keys)
    assert [line.payload() for line in await archived_lines(store, "TASKS")] == payloads
    report = await verify.verify(store, await verify.plan(store, "TASKS", None), whole_streams=True)
    assert report.problems == []

    await bus.js.add_stream(StreamConfig(name="FROM_S3", subjects=["from-s3.>"]))
    plan = await restore.plan(store, "TASKS", Month(2025, 1), Month(2025, 2))
    result = await restore.restore(bus.nc, bus.js, store, plan, restore.into("from-s3.>"))
    assert result.published == EVENTS
    restored = await stream_payloads(bus.js, "FROM_S3")
    assert [data for _, data, _ in restored] == payloads


async def test_unreachable_s3_store_is_a_clear_error_without_secrets() -> None:
    store = open_store(
        "s3://nowhere/x?endpoint=http://127.0.0.1:9&max_retries=0"
        "&access_key_id=a&secret_access_key=hunter2"
    )
    with pytest.raises(StoreError) as failure:
        await check_reachable(store, timeout_s=30)
    assert "127.0.0.1:9" in str(failure.value)
    assert "hunter2" not in str(failure.value)
