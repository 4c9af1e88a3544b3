"""The agent's pure decisions: what an input asks for, the prompt, and the ids it publishes."""

from __future__ import annotations

import msgspec
import pytest

from zhongshu.agent import domain
from zhongshu.agent.runs import configured_secrets
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts.events import (
    CommandRequested,
    DeliveryTarget,
    MessageReceived,
    TaskRequested,
    WorkflowRef,
)
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.runtime.hubconfig import parse_config


def command(name: str, text: str = "") -> CommandRequested:
    return CommandRequested(command=name, text=text, message=example(MessageReceived))


def test_free_text_is_a_conversation_with_memory() -> None:
    plan = domain.plan_command(command("chat", "  how many alerts today? "), "evt-1")
    assert plan.mode == "converse"
    assert plan.prompt == "how many alerts today?"
    assert plan.task_id == derive_msg_id("evt-1", "task")


def test_task_command_runs_once_without_memory() -> None:
    plan = domain.plan_command(command("task", "summarize the incident"), "evt-1")
    assert plan.mode == "once"
    assert plan.title == "summarize the incident"


def test_reset_forgets_and_says_so() -> None:
    plan = domain.plan_command(command("reset"), "evt-1")
    assert plan.mode == "reset"
    assert plan.notice == domain.RESET_TEXT


def test_a_command_without_text_asks_for_it_instead_of_calling_the_model() -> None:
    plan = domain.plan_command(command("task", "   "), "evt-1")
    assert plan.mode == "notice"
    assert "/task needs some text" in plan.notice


def test_other_commands_reach_the_model_as_written() -> None:
    plan = domain.plan_command(command("summarize", "3d"), "evt-1")
    assert plan.mode == "once"
    assert plan.prompt == "/summarize 3d"


def test_a_task_request_delivers_to_its_chats_and_names_them() -> None:
    request = TaskRequested(
        task_id="t-1",
        tenant="acme",
        requested_by="api:ops",
        origin="api",
        command="report",
        args=("daily",),
        deliver_to=(
            DeliveryTarget(kind="chat", app="acme-feishu", chat_id="oc_1"),
            DeliveryTarget(kind="callback", url="https://example.com/hook"),
        ),
    )
    plan = domain.plan_task(request, "t-1")
    assert plan.prompt == "/report daily"
    assert plan.deliver_to_chats == (("acme-feishu", "oc_1"),)


def test_a_workflow_task_is_left_to_the_task_engine() -> None:
    request = TaskRequested(
        task_id="t-1",
        tenant="acme",
        requested_by="api:ops",
        origin="api",
        workflow=WorkflowRef(name="daily"),
    )
    assert domain.plan_task(request, "t-1").mode == "skip"


def test_the_system_prompt_never_carries_a_configured_secret() -> None:
    config = parse_config(
        "apps:\n  a:\n    tenant: t\n    platform: feishu\n"
        "    feishu: {app_id: cli_x, app_secret: '${SECRET}'}\n"
        "    persona: 'You are the bot. Our key is ${SECRET}.'\n",
        environ={"SECRET": "s3cr3t-value"},
    )
    settings = AgentSettings(redis_url="redis://x", MODEL_API_KEY="sk-live-123")
    secrets = configured_secrets(config, settings)
    assert "s3cr3t-value" in secrets
    assert "sk-live-123" in secrets
    persona = config.apps["a"].persona
    prompt = domain.system_prompt(persona + " sk-live-123", secrets)
    assert "s3cr3t-value" not in prompt
    assert "sk-live-123" not in prompt
    assert "[redacted]" in prompt


def test_messages_put_summary_and_history_before_the_new_prompt() -> None:
    messages = domain.build_messages(
        "sys", "and tomorrow?", summary="talked about weather", history=[("user", "today?")]
    )
    assert [m.role for m in messages] == ["system", "system", "user", "user"]
    assert messages[1].content == domain.SUMMARY_PREFIX + "talked about weather"
    assert messages[-1].content == "and tomorrow?"


def test_final_chunk_keeps_its_id_across_attempts_and_sorts_after_every_chunk() -> None:
    first_run_last_chunk = domain.chunk_index(1, 500)
    second_run_first_chunk = domain.chunk_index(2, 1)
    assert first_run_last_chunk < second_run_first_chunk < domain.FINAL_CHUNK_INDEX
    final = domain.reply_msg_id("r-1", domain.FINAL_CHUNK_INDEX)
    assert final == derive_msg_id("r-1", "final")
    assert domain.reply_msg_id("r-1", 3) != final


@pytest.mark.parametrize(
    ("previous", "current", "added"),
    [("", "Hel", "Hel"), ("Hel", "Hello", "lo"), ("Hello", "Hi", "Hi")],
)
def test_new_text_is_the_growth_or_everything_after_a_restart(
    previous: str, current: str, added: str
) -> None:
    assert domain.new_text(previous, current) == added


def test_failure_reasons_are_for_users() -> None:
    assert "rate limiting" in domain.describe_failure("http_429")
    assert "in time" in domain.describe_failure("timeout")
    assert "failing" in domain.describe_failure("http_503")
    text = domain.failure_text(domain.describe_failure("timeout"))
    assert text.startswith("Sorry")


def test_plans_are_plain_values() -> None:
    plan = domain.plan_command(command("task", "x"), "evt-1")
    assert msgspec.json.encode(plan.__dict__)
