"""The webhooks on a real JetStream: what Feishu sends is stored once, answered after the
PubAck, and anything not genuine is refused, audited and never published."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded, CardActionReceived, MessageReceived
from zhongshu.contracts.events.alerts import CARD_VALUE_KEY
from zhongshu.contracts.grants import Grant
from zhongshu.contracts.streams import GRANTS_KV
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.testing import collect, eventually, provision_all
from zhongshu.ingress_feishu.main import build_service
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.grants import GrantStore
from zhongshu.runtime.service import Service

ENCRYPT_KEY, TOKEN = "enc-key-for-tests", "verification-token-for-tests"
BOT = User("Acme Bot")
ADMIN = User("Li Lei")  # the secure app's admin


def write_config(directory: Path, tenant: str) -> Path:
    path = directory / "zhongshu.yaml"
    path.write_text(
        f"""
tenants:
  {tenant}: {{name: Test}}
apps:
  secure:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: cli_secure, app_secret: s, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    access: {{admins: [{ADMIN.open_id}]}}
  plain:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: cli_plain, app_secret: s, verification_token: {TOKEN}}}
"""
    )
    return path


Start = Callable[[], Awaitable[str]]


@pytest.fixture
def tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def start_replica(
    provisioned_nats_url: str, tmp_path: Path, tenant: str
) -> AsyncIterator[Start]:
    """Starts ingress-feishu replicas on the session's bus; returns each one's base URL."""
    config = write_config(tmp_path, tenant)
    started: list[Service] = []

    async def start() -> str:
        service = build_service()
        await service.start(
            FeishuIngressSettings(nats_url=provisioned_nats_url, health_port=0, config_path=config)
        )
        started.append(service)
        return f"http://127.0.0.1:{service.health_port}"

    yield start
    for service in started:
        await service.stop()


@pytest_asyncio.fixture
async def base_url(start_replica: Start) -> str:
    return await start_replica()


def sender(base_url: str, app: str = "secure", **options: object) -> FeishuEventSender:
    secure = app == "secure"
    return FeishuEventSender(
        base_url,
        app,
        encrypt_key=ENCRYPT_KEY if secure else None,
        verification_token=TOKEN,
        bot=BOT,
        **options,  # type: ignore[arg-type]
    )


async def inbound(js: JetStreamContext, tenant: str, within_s: float = 1.0) -> list[bytes]:
    found = await collect(js, subjects.chat_inbound("feishu", tenant), within_s=within_s)
    return [m.data for m in found]


@pytest.mark.parametrize(("app", "encrypted"), [("secure", True), ("plain", False)])
async def test_url_verification_is_echoed_at_once(
    base_url: str, app: str, encrypted: bool, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url, app) as feishu:
        body, headers = feishu.encode(feishu.challenge("ch-123"), encrypted=encrypted)
        assert "X-Lark-Signature" not in headers
        # Answered from the request alone (no bus round trip), well inside Feishu's 1 s; the
        # time itself is not asserted, these machines are shared and noisy.
        response = await feishu.post("events", body, headers)
    assert response.status_code == 200
    assert response.json() == {"challenge": "ch-123"}
    assert await inbound(js, tenant, within_s=0.3) == []


async def test_a_group_message_mentioning_the_bot_is_published_after_the_puback(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url) as feishu:
        payload = feishu.message(text="/status please", chat_type="group", mentions=[BOT])
        delivery = await feishu.send(payload)
    assert delivery.response.status_code == 200
    [raw] = await inbound(js, tenant)
    envelope = wire.decode(raw, MessageReceived)
    message = envelope.data
    assert (message.app, message.tenant, message.chat_kind) == ("secure", tenant, "group")
    assert message.text == "/status please"
    assert message.mentions_bot
    message_id = payload["event"]["message"]["message_id"]
    assert message.platform_message_id == message_id
    assert envelope.id == f"feishu:secure:{message_id}"
    assert envelope.conversation_id == payload["event"]["message"]["chat_id"]


async def test_retried_feishu_event_is_published_once(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url) as feishu:
        payload = feishu.message(text="once")
        delivery = await feishu.redeliver(payload, 4)
    assert [r.status_code for r in delivery.responses] == [200] * 4
    assert len(await inbound(js, tenant)) == 1


async def test_the_same_message_under_a_new_event_id_is_published_once(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    # The receive_v1 page warns that a message may be re-pushed with a different event_id.
    async with sender(base_url) as feishu:
        first = feishu.message(text="once", message_id="om_" + uuid.uuid4().hex)
        again = {**first, "header": {**first["header"], "event_id": uuid.uuid4().hex}}
        assert (await feishu.send(first)).acknowledged
        assert (await feishu.send(again)).acknowledged
    assert len(await inbound(js, tenant)) == 1


async def test_two_replicas_receiving_the_same_event_publish_one(
    start_replica: Start, js: JetStreamContext, tenant: str
) -> None:
    first, second = await start_replica(), await start_replica()
    async with sender(first) as to_first, sender(second) as to_second:
        payload = to_first.message(text="race")
        deliveries = await asyncio.gather(
            *(feishu.send(payload) for feishu in (to_first, to_second, to_first, to_second))
        )
    assert all(d.acknowledged for d in deliveries)
    assert len(await inbound(js, tenant)) == 1


async def test_a_card_click_is_answered_with_the_configured_toast_after_it_is_stored(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url) as feishu:
        delivery = await feishu.send(feishu.card_action({"approve": "T-42"}), path="cards")
    assert delivery.response.status_code == 200
    assert delivery.response.json() == {"toast": {"type": "info", "content": "收到，处理中…"}}
    [raw] = await inbound(js, tenant)
    assert wire.decode(raw, CardActionReceived).data.action == {"approve": "T-42"}


async def test_an_admins_click_on_an_alert_button_is_toasted_as_received(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    value = {CARD_VALUE_KEY: "k1", "op": "acknowledge"}
    async with sender(base_url) as feishu:
        delivery = await feishu.send(feishu.card_action(value, user=ADMIN), path="cards")
    assert delivery.response.status_code == 200
    toast = delivery.response.json()["toast"]
    assert toast["type"] == "info"
    assert toast["content"].startswith("Received: acknowledge")
    assert toast["i18n"]["zh_cn"].startswith("已收到")
    [raw] = await inbound(js, tenant)  # the router decides and acts on it
    assert wire.decode(raw, CardActionReceived).data.action == value


async def test_a_non_admins_click_on_an_alert_button_gets_an_error_toast(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    value = {CARD_VALUE_KEY: "k1", "op": "resolve"}
    async with sender(base_url) as feishu:
        delivery = await feishu.send(
            feishu.card_action(value, user=User("Han Meimei")), path="cards"
        )
    assert delivery.response.status_code == 200
    assert delivery.response.json()["toast"] == {
        "type": "error",
        "content": "Only this app's admins can handle alerts",
        "i18n": {
            "en_us": "Only this app's admins can handle alerts",
            "zh_cn": "只有本应用的管理员可以处理告警",
        },
    }
    # Stored all the same: the router audits the refused click.
    [raw] = await inbound(js, tenant)
    assert wire.decode(raw, CardActionReceived).data.user.open_id != ADMIN.open_id


async def test_an_alert_click_with_a_bad_signature_is_refused_and_not_published(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url) as feishu:
        payload = feishu.card_action({CARD_VALUE_KEY: "k1", "op": "resolve"}, user=ADMIN)
        body, headers = feishu.encode(payload)
        headers["X-Lark-Signature"] = "0" * 64
        response = await feishu.post("cards", body, headers)
    assert response.status_code == 401
    assert "toast" not in response.text
    assert await inbound(js, tenant, within_s=0.3) == []


async def test_a_legacy_card_callback_signed_with_sha1_is_accepted(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    async with sender(base_url, "plain") as feishu:
        payload = feishu.legacy_card_action({"approve": "no"})
        delivery = await feishu.send(payload, path="cards", legacy_card=True)
    assert delivery.response.status_code == 200
    [raw] = await inbound(js, tenant)
    assert wire.decode(raw, CardActionReceived).data.token == payload["token"]


async def bad_requests(feishu: FeishuEventSender, case: str) -> httpx.Response:
    payload = feishu.message(text="should never be published")
    body, headers = feishu.encode(payload)
    if case == "bad signature":
        headers["X-Lark-Signature"] = "0" * 64
    elif case == "missing signature":
        headers = {k: v for k, v in headers.items() if not k.startswith("X-Lark")}
    elif case == "stale timestamp":
        body, headers = feishu.encode(payload, timestamp=1_700_000_000)
    elif case == "malformed body":
        body, headers = b'{"encrypt": "not base64!"', {}
    elif case == "wrong type":  # signed and encrypted; inside, a number where a list belongs
        post = {"content": 1.5}
        payload = feishu.message(message_type="post", content=post)
        body, headers = feishu.encode(payload)
    elif case == "body too large":
        body = b"{" + b" " * (1024 * 1024) + b"}"
    return await feishu.post("events", body, headers)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("bad signature", 401),
        ("missing signature", 401),
        ("bad token", 401),
        ("stale timestamp", 401),
        ("malformed body", 400),
        ("wrong type", 400),
        ("body too large", 413),
    ],
)
async def test_a_refused_request_publishes_nothing_and_is_audited(
    base_url: str, js: JetStreamContext, tenant: str, case: str, status: int
) -> None:
    options = {"verification_token": "wrong"} if case == "bad token" else {}
    async with FeishuEventSender(
        base_url,
        "secure",
        encrypt_key=ENCRYPT_KEY,
        verification_token=options.get("verification_token", TOKEN),
    ) as feishu:
        response = await bad_requests(feishu, case)
    assert response.status_code == status
    assert await inbound(js, tenant, within_s=0.3) == []
    [audit] = await collect(js, subjects.audit(tenant, "security"), count=1, within_s=3)
    event = wire.decode(audit.data, AuditRecorded).data
    assert (event.action, event.target, event.outcome) == (
        "feishu.webhook.rejected",
        "secure",
        "denied",
    )
    assert ENCRYPT_KEY not in event.detail
    assert TOKEN not in event.detail


async def test_an_unknown_app_is_404_and_audited(base_url: str, js: JetStreamContext) -> None:
    app = "nobody-" + uuid.uuid4().hex[:8]
    async with sender(base_url, app) as feishu:
        delivery = await feishu.send(feishu.message(text="hi"), encrypted=False)
    assert delivery.response.status_code == 404
    audits = await collect(js, subjects.audit("_", "security"), within_s=1)
    targets = [wire.decode(m.data, AuditRecorded).data.target for m in audits]
    assert app in targets


async def test_when_the_bus_is_down_feishu_gets_503_and_readyz_fails(
    private_nats_server: NatsServer, tmp_path: Path, tenant: str
) -> None:
    await provision_all(private_nats_server.url)
    service = build_service()
    await service.start(
        FeishuIngressSettings(
            nats_url=private_nats_server.url,
            health_port=0,
            config_path=write_config(tmp_path, tenant),
        )
    )
    base = f"http://127.0.0.1:{service.health_port}"
    try:
        private_nats_server.stop()
        async with sender(base) as feishu, httpx.AsyncClient() as client:
            for _ in range(50):  # until the client notices the server is gone
                if (await client.get(f"{base}/readyz")).status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get(f"{base}/readyz")).status_code == 503
            delivery = await feishu.send(feishu.message(text="lost?"))
        assert delivery.response.status_code == 503
    finally:
        await service.stop()


async def test_the_fake_platform_re_pushes_an_unanswered_event_on_its_schedule(
    base_url: str,
) -> None:
    # 404 is not 200, so Feishu keeps re-pushing: the first push and four retries.
    async with sender(base_url, "nobody", time_scale=0.0001) as feishu:
        delivery = await feishu.send(feishu.message(text="hi"), encrypted=False, retries=4)
    assert [r.status_code for r in delivery.responses] == [404] * 5
    assert not delivery.acknowledged


async def test_a_granted_admins_alert_click_is_toasted_as_received_until_revoked(
    base_url: str, js: JetStreamContext, tenant: str
) -> None:
    """The toast follows the `grants` bucket live (the router decides either way)."""
    user = User("Han Meimei")
    grants = GrantStore(await js.key_value(GRANTS_KV.bucket))
    value = {CARD_VALUE_KEY: "k1", "op": "acknowledge"}
    async with sender(base_url) as feishu:

        async def toast() -> str:
            delivery = await feishu.send(feishu.card_action(value, user=user), path="cards")
            kind: str = delivery.response.json()["toast"]["type"]
            return kind

        assert await toast() == "error"
        await grants.grant(Grant(tenant=tenant, app="secure", user=user.open_id, role="admin"))

        async def received() -> bool:
            return await toast() == "info"

        await eventually(received, "the grant to reach the ingress")
        await grants.revoke(tenant, "secure", user.open_id, "admin")

        async def refused() -> bool:
            return await toast() == "error"

        await eventually(refused, "the revocation to reach the ingress")
