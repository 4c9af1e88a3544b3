"""The bus topology comes from the services' own declarations: the committed AsyncAPI document
is generated from them, every installed service declares what it publishes, and what each
receives is read off its consumers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zhongshu.contracts import channels, schema, streams, subjects
from zhongshu.contracts.events import MessageReceived
from zhongshu.runtime import Service, ServiceSettings, topology
from zhongshu.runtime.errors import RuntimeFailure

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_committed_docs_match_the_services_declarations() -> None:
    problems = schema.check(DOCS, topology.collect())
    assert not problems, (
        "docs/ drifted from the code:\n  "
        + "\n  ".join(problems)
        + f"\n{schema.REGENERATE_HINT} and commit the result"
    )


def test_every_installed_service_declares_what_it_publishes() -> None:
    services = topology.installed_services()
    assert {"router", "notifier", "agent", "gateway", "taskengine"} <= set(services)
    for name, service in services.items():
        assert service.publishes is not None, f"{name} declares no publishes=[...]"


def test_receives_are_read_off_the_consumers_and_sends_off_the_declaration() -> None:
    service: Service[ServiceSettings, Any] = Service(
        "sample", ServiceSettings, publishes=[channels.AUDIT, channels.CHAT_REPLIES]
    )

    @service.consumes(
        stream=streams.CHAT_INBOUND.name,
        subjects=subjects.chat_inbound("feishu", "acme"),
        event=MessageReceived,
    )
    async def on_inbound(deps: Any, env: Any, delivery: Any) -> None:  # pragma: no cover
        return None

    party = topology.party(service)
    assert party.receive == ("chatInbound",)
    assert party.send == ("chatReplies", "audit")  # in the order of the channel table


def test_a_service_without_a_declaration_is_named() -> None:
    with pytest.raises(RuntimeFailure, match="undeclared-one"):
        topology.party(Service("undeclared-one", ServiceSettings))


def test_main_check_exits_nonzero_with_the_fix(tmp_path: Path, capsys: Any) -> None:
    assert topology.main(["--check", str(tmp_path)]) == 1
    assert "task docs" in capsys.readouterr().err
    assert topology.main(["--write", str(tmp_path)]) == 0
    assert topology.main(["--check", str(tmp_path)]) == 0
