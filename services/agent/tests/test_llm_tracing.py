"""Every model call is a ``chat <model>`` span with the GenAI semantic conventions (and never
the prompt or the answer) and one observation of ``zhongshu_agent_inference_seconds``; every
tool call an ``execute_tool <name>`` span under the same trace. Against the fake LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from zhongshu.agent.inference import Inference
from zhongshu.agent.llm import ChatMessage, ChatRequest, LLMClient, LLMGaveUp, Provider, ToolSpec
from zhongshu.agent.metrics import INFERENCE_SECONDS
from zhongshu.agent.models import ModelSetup
from zhongshu.agent.tools.registry import FunctionTool, ToolContext, ToolRegistry
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.runtime import telemetry

QUESTION = "what is the capital of Zhejiang, asked by a user who must stay private"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


def observed(provider: str, outcome: str) -> float:
    for metric in INFERENCE_SECONDS.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("provider") == provider
                and sample.labels.get("outcome") == outcome
            ):
                return float(sample.value)
    return 0.0


async def test_a_model_call_is_a_genai_span_and_timed(
    fake: FakeLLM, recorded_spans: InMemorySpanExporter
) -> None:
    provider = Provider(name="deepseek", endpoint=fake.url, model="deepseek-chat")
    before = observed("deepseek", "ok")
    client = LLMClient([provider], timeout_s=10)
    try:
        request = ChatRequest(
            messages=(ChatMessage(role="user", content=QUESTION),), temperature=0.2, max_tokens=300
        )
        with telemetry.tracer().start_as_current_span("process agent-commands"):
            telemetry.annotate(tenant="acme", task_id="task-42")
            result = await client.complete(request)
    finally:
        await client.aclose()

    assert observed("deepseek", "ok") - before == 1
    [span] = [s for s in recorded_spans.get_finished_spans() if s.name == "chat deepseek-chat"]
    attributes = dict(span.attributes or {})
    assert span.kind == SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.system"] == "deepseek"
    assert attributes["gen_ai.provider.name"] == "deepseek"
    assert attributes["gen_ai.request.model"] == "deepseek-chat"
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.request.max_tokens"] == 300
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens > 0
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    # Found by the tenant and task of the consumer span it runs under.
    assert attributes["zhongshu.tenant"] == "acme"
    assert attributes["zhongshu.task_id"] == "task-42"
    # What the user asked and what the model answered stay out of traces.
    assert not any(QUESTION in str(v) or result.text in str(v) for v in attributes.values())


async def test_a_model_call_that_gives_up_is_an_error_span_and_timed(
    fake: FakeLLM, recorded_spans: InMemorySpanExporter
) -> None:
    fake.fail_for(60, status=500)
    before = observed("none", "error")
    client = LLMClient([Provider(name="fake", endpoint=fake.url, model="m")], timeout_s=0.5)
    try:
        with pytest.raises(LLMGaveUp):
            await client.complete(ChatRequest(messages=(ChatMessage(role="user", content="hi"),)))
    finally:
        await client.aclose()
    assert observed("none", "error") - before == 1
    [span] = [s for s in recorded_spans.get_finished_spans() if s.name == "chat m"]
    assert span.status.status_code == StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "http_500"


async def test_each_tool_call_is_an_execute_tool_span_beside_the_model_calls(
    fake: FakeLLM, recorded_spans: InMemorySpanExporter
) -> None:
    async def weather(arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        return f"sunny in {arguments.get('city')}"

    spec = ToolSpec(
        name="weather",
        description="Today's weather",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    provider = Provider(name="fake", endpoint=fake.url, model="fake-model")
    setup = ModelSetup(providers=(provider,), qps=50, timeout_s=10, max_concurrent=4)
    client = LLMClient([provider], timeout_s=10)

    async def publish(reply: object) -> None:
        raise AssertionError("no reply expected")

    context = ToolContext(tenant="acme", task_id="t1", user="u1", app=None, publish_reply=publish)
    try:
        with telemetry.tracer().start_as_current_span("process agent-commands") as parent:
            answer = await Inference(None).answer(
                client,
                setup,
                (ChatMessage(role="user", content='[[tool:weather {"city": "Hangzhou"}]]'),),
                tools=ToolRegistry([FunctionTool(spec, weather)]),
                tool_context=context,
                max_rounds=2,
                cacheable=False,
            )
    finally:
        await client.aclose()
    assert answer.text == "Answer: sunny in Hangzhou"
    spans = recorded_spans.get_finished_spans()
    calls = [s for s in spans if s.name == "chat fake-model"]
    [tool] = [s for s in spans if s.name == "execute_tool weather"]
    assert len(calls) == 2  # the call that asked for the tool, and the answer after it
    assert dict(tool.attributes or {})["gen_ai.tool.name"] == "weather"
    assert dict(tool.attributes or {})["gen_ai.operation.name"] == "execute_tool"
    assert [dict(s.attributes or {})["gen_ai.response.finish_reasons"] for s in calls] == [
        ("tool_calls",),
        ("stop",),
    ]
    for span in (*calls, tool):
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
