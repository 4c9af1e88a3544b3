"""The LLM client against the fake OpenAI-compatible server: answers streamed and not, tool
calls, retries inside the time budget, fallback across providers, the gate, and no key in any
error. Budgets are small so the suite stays quick; durations are only asserted as lower bounds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from itertools import pairwise

import httpx
import pytest

from zhongshu.agent.llm import (
    AttemptRecord,
    ChatMessage,
    ChatRequest,
    LLMClient,
    LLMGaveUp,
    Provider,
    ToolSpec,
)
from zhongshu.devstack.fakes.llm import FakeLLM

SECRET = "sk-test-5f0c1e9a7d3b"
STATUS_TOOL = ToolSpec(
    name="task_status",
    description="The status of a task",
    parameters={"type": "object", "properties": {"task_id": {"type": "string"}}},
)


def ask(text: str, *, stream: bool = True) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(role="user", content=text),), stream=stream)


def provider(fake: FakeLLM, name: str = "fake", api_key: str | None = None) -> Provider:
    return Provider(name=name, endpoint=fake.url, model=f"{name}-model", api_key=api_key)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def backup() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@contextlib.asynccontextmanager
async def client_for(*providers: Provider, **options: object) -> AsyncIterator[LLMClient]:
    client = LLMClient(providers, **options)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.aclose()


class Texts:
    """An ``on_text`` that keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, text: str) -> None:
        self.seen.append(text)


# -- answers -----------------------------------------------------------------------------------


async def test_streamed_answer_arrives_whole_and_on_text_sees_it_grow(fake: FakeLLM) -> None:
    texts = Texts()
    async with client_for(provider(fake)) as client:
        result = await client.complete(ask("what is the backlog today"), on_text=texts)

    assert result.text == "Answer: what is the backlog today"
    assert (result.finish_reason, result.provider, result.model) == ("stop", "fake", "fake-model")
    assert result.attempts == 1
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0
    assert len(texts.seen) > 1, "streamed in several chunks"
    assert all(later.startswith(earlier) for earlier, later in pairwise(texts.seen))
    assert texts.seen[-1] == result.text
    body = fake.calls[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "fake-model"


async def test_unstreamed_answer_is_read_whole(fake: FakeLLM) -> None:
    texts = Texts()
    async with client_for(provider(fake)) as client:
        result = await client.complete(ask("ping", stream=False), on_text=texts)

    assert result.text == "Answer: ping"
    assert result.usage.completion_tokens > 0
    assert texts.seen == ["Answer: ping"]
    assert fake.calls[0].body["stream"] is False
    assert "stream_options" not in fake.calls[0].body


async def test_calls_reuse_one_kept_alive_connection(fake: FakeLLM) -> None:
    async with client_for(provider(fake)) as client:
        for stream in (True, True, False, True):
            await client.complete(ask("again", stream=stream))

    assert len({call.peer for call in fake.calls}) == 1


async def test_request_parameters_and_bearer_key_reach_the_provider(fake: FakeLLM) -> None:
    fake.api_key = SECRET
    request = ChatRequest(
        messages=(
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="hi", name="alice"),
        ),
        temperature=0.2,
        max_tokens=64,
    )
    async with client_for(provider(fake, api_key=SECRET)) as client:
        result = await client.complete(request)

    assert result.text == "Answer: hi"
    body = fake.calls[0].body
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi", "name": "alice"},
    ]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "unstreamed"])
async def test_tool_call_round_trip(fake: FakeLLM, stream: bool) -> None:
    question = ChatMessage(
        role="user", content='how is it going? [[tool:task_status {"task_id": "t-42"}]]'
    )
    async with client_for(provider(fake)) as client:
        first = await client.complete(
            ChatRequest(messages=(question,), tools=(STATUS_TOOL,), stream=stream)
        )
        assert first.finish_reason == "tool_calls"
        assert first.text == ""
        [call] = first.tool_calls
        assert (call.name, call.arguments) == ("task_status", '{"task_id": "t-42"}')
        assert call.id

        follow_up = (
            question,
            ChatMessage(role="assistant", tool_calls=first.tool_calls),
            ChatMessage(role="tool", tool_call_id=call.id, content="t-42 is running"),
        )
        second = await client.complete(
            ChatRequest(messages=follow_up, tools=(STATUS_TOOL,), stream=stream)
        )

    assert (second.text, second.finish_reason, second.tool_calls) == (
        "Answer: t-42 is running",
        "stop",
        (),
    )
    sent = fake.calls[1].body
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "task_status",
            "description": STATUS_TOOL.description,
            "parameters": STATUS_TOOL.parameters,
        },
    }
    assert sent["messages"][1]["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "task_status", "arguments": '{"task_id": "t-42"}'},
        }
    ]
    assert sent["messages"][2] == {
        "role": "tool",
        "content": "t-42 is running",
        "tool_call_id": call.id,
    }


# -- retries and the budget --------------------------------------------------------------------


async def test_429_with_retry_after_three_times_then_the_answer(fake: FakeLLM) -> None:
    retry_after = 0.3
    fake.fail_next(3, status=429, retry_after_s=retry_after)
    records: list[AttemptRecord] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client_for(
        provider(fake), timeout_s=10, random=lambda: 0.0, on_attempt=records.append
    ) as client:
        result = await client.complete(ask("are you there"))
    elapsed = loop.time() - started

    assert result.text == "Answer: are you there"
    assert result.attempts == 4
    assert fake.outcomes() == ["http_429", "http_429", "http_429", "ok"]
    assert [r.code for r in records] == ["http_429", "http_429", "http_429", None]
    assert [r.retry_after_s for r in records[:3]] == [retry_after] * 3
    assert all(r.waited_s > 0 for r in records[1:])
    assert elapsed >= 3 * retry_after
    gaps = [b.at - a.at for a, b in pairwise(fake.calls)]
    assert all(gap >= retry_after for gap in gaps)


async def test_5xx_then_the_second_provider_answers_at_once(fake: FakeLLM, backup: FakeLLM) -> None:
    fake.fail_for(30, status=500)
    records: list[AttemptRecord] = []
    async with client_for(
        provider(fake, "primary"), provider(backup, "secondary"), on_attempt=records.append
    ) as client:
        result = await client.complete(ask("fall back"))

    assert (result.provider, result.model, result.attempts) == (
        "secondary",
        "secondary-model",
        2,
    )
    assert result.text == "Answer: fall back"
    assert [(r.provider, r.code, r.status) for r in records] == [
        ("primary", "http_500", 500),
        ("secondary", None, 200),
    ]
    assert records[1].waited_s == 0.0, "the next provider is tried without backing off"
    assert backup.calls[0].body["model"] == "secondary-model"


async def test_every_provider_failing_backs_off_and_starts_again_from_the_first(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.fail_next(1, status=503)
    backup.fail_next(1, status=502)
    records: list[AttemptRecord] = []
    async with client_for(
        provider(fake, "primary"),
        provider(backup, "secondary"),
        random=lambda: 1.0,
        on_attempt=records.append,
    ) as client:
        result = await client.complete(ask("round two"))

    assert (result.provider, result.attempts) == ("primary", 3)
    assert [(r.provider, r.code) for r in records] == [
        ("primary", "http_503"),
        ("secondary", "http_502"),
        ("primary", None),
    ]
    assert records[2].waited_s >= 0.5  # the first backoff step, jitter pinned to its ceiling


async def test_401_falls_back_and_that_provider_is_not_tried_again(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.api_key = "the-right-key"
    backup.fail_next(1, status=500)
    async with client_for(
        provider(fake, "primary", api_key=SECRET),
        provider(backup, "secondary"),
        random=lambda: 0.0,
    ) as client:
        result = await client.complete(ask("who answers"))

    assert (result.provider, result.attempts) == ("secondary", 3)
    assert fake.outcomes() == ["http_401"]
    assert backup.outcomes() == ["http_500", "ok"]


async def test_refused_everywhere_gives_up_at_once(fake: FakeLLM, backup: FakeLLM) -> None:
    fake.fail_next(5, status=400)
    backup.api_key = "the-right-key"
    async with client_for(
        provider(fake, "primary"), provider(backup, "secondary", api_key=SECRET)
    ) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("nobody will"))

    assert (caught.value.code, caught.value.provider, caught.value.attempts) == (
        "http_401",
        "secondary",
        2,
    )
    assert [e.code for e in caught.value.errors] == ["http_400", "http_401"]
    assert not caught.value.retryable
    assert (len(fake.calls), len(backup.calls)) == (1, 1)


async def test_a_stalled_stream_is_cut_by_the_budget(fake: FakeLLM) -> None:
    fake.stall_next(5, after_chunks=1)
    texts = Texts()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client_for(provider(fake), timeout_s=1.0) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("this never ends"), on_text=texts)

    assert caught.value.code == "timeout"
    assert caught.value.attempts == 1
    assert loop.time() - started >= 1.0
    assert texts.seen == ["Answer:"], "the chunk sent before the stall was passed on"
    assert fake.outcomes() == ["stalled"]


async def test_an_unstreamed_stall_is_cut_by_the_budget(fake: FakeLLM) -> None:
    fake.stall_next(1)
    async with client_for(provider(fake), timeout_s=0.5) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("silence", stream=False))

    assert caught.value.code == "timeout"


async def test_failing_longer_than_the_budget_gives_up_with_the_last_status(
    fake: FakeLLM,
) -> None:
    fake.fail_for(60, status=500)
    async with client_for(
        provider(fake), timeout_s=1.5, random=lambda: 0.5, min_attempt_s=0.5
    ) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("anyone"))

    assert caught.value.code == "http_500"
    assert caught.value.status == 500
    assert caught.value.attempts >= 2
    assert caught.value.attempts == len(fake.calls)


async def test_a_retry_after_beyond_the_budget_gives_up_without_waiting(fake: FakeLLM) -> None:
    fake.fail_next(1, status=429, retry_after_s=120)
    async with client_for(provider(fake), timeout_s=2.0) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("later"))

    assert (caught.value.code, caught.value.attempts) == ("http_429", 1)
    assert caught.value.elapsed_s < 120


async def test_a_broken_stream_is_retried_and_the_text_starts_again(fake: FakeLLM) -> None:
    fake.cut_next(1, after_chunks=2)
    texts = Texts()
    records: list[AttemptRecord] = []
    async with client_for(provider(fake), random=lambda: 0.0, on_attempt=records.append) as client:
        result = await client.complete(ask("one two three"), on_text=texts)

    assert result.text == "Answer: one two three"
    assert result.attempts == 2
    assert records[0].code == "bad_response"
    assert texts.seen == [
        "Answer:",
        "Answer: one",
        "Answer:",  # the second attempt's text, from empty again
        "Answer: one",
        "Answer: one two",
        "Answer: one two three",
    ]


async def test_a_truncated_json_answer_is_retried(fake: FakeLLM) -> None:
    fake.cut_next(1)
    async with client_for(provider(fake), random=lambda: 0.0) as client:
        result = await client.complete(ask("half", stream=False))

    assert (result.text, result.attempts) == ("Answer: half", 2)


async def test_an_unreachable_provider_falls_back_with_code_connect(fake: FakeLLM) -> None:
    async with FakeLLM() as gone:
        dead = provider(gone, "gone")
    records: list[AttemptRecord] = []
    async with client_for(dead, provider(fake), on_attempt=records.append) as client:
        result = await client.complete(ask("still there?"))

    assert result.provider == "fake"
    assert [r.code for r in records] == ["connect", None]


async def test_an_on_text_failure_is_the_callers_and_is_not_retried(fake: FakeLLM) -> None:
    class CardGone(Exception):
        pass

    async def on_text(text: str) -> None:
        raise CardGone(text)

    records: list[AttemptRecord] = []
    async with client_for(provider(fake), on_attempt=records.append) as client:
        with pytest.raises(CardGone):
            await client.complete(ask("hello"), on_text=on_text)

    assert len(fake.calls) == 1
    assert [r.code for r in records] == ["aborted"]


async def test_a_failing_on_attempt_does_not_fail_the_call(fake: FakeLLM) -> None:
    def on_attempt(record: AttemptRecord) -> None:
        raise RuntimeError("metrics are down")

    async with client_for(provider(fake), on_attempt=on_attempt) as client:
        result = await client.complete(ask("still fine"))

    assert result.text == "Answer: still fine"


# -- the gate ----------------------------------------------------------------------------------


class CountingGate:
    """Records when each attempt was let in and let go."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float]] = []
        self.held = 0

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        entered = loop.time()
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
            self.windows.append((entered, loop.time()))


async def test_the_gate_is_entered_once_per_attempt_and_not_held_while_backing_off(
    fake: FakeLLM,
) -> None:
    gate = CountingGate()
    fake.fail_next(2, status=500)
    async with client_for(provider(fake), gate=gate, random=lambda: 1.0, timeout_s=10) as client:
        result = await client.complete(ask("gated"))

    assert result.attempts == 3
    assert len(gate.windows) == 3
    assert gate.held == 0
    gaps = [later[0] - earlier[1] for earlier, later in pairwise(gate.windows)]
    assert gaps[0] >= 0.5  # backoff rounds 0 and 1 with jitter pinned at the ceiling
    assert gaps[1] >= 1.0


async def test_time_waiting_at_the_gate_is_metered_not_charged_to_the_budget(
    fake: FakeLLM,
) -> None:
    @contextlib.asynccontextmanager
    async def slow_gate() -> AsyncIterator[None]:
        await asyncio.sleep(0.6)
        yield

    records: list[AttemptRecord] = []
    async with client_for(
        provider(fake), gate=slow_gate, timeout_s=0.5, on_attempt=records.append
    ) as client:
        result = await client.complete(ask("queued"))

    assert result.text == "Answer: queued"
    assert records[0].gate_wait_s >= 0.6


async def test_the_budget_can_include_the_gate(fake: FakeLLM) -> None:
    @contextlib.asynccontextmanager
    async def stuck_gate() -> AsyncIterator[None]:
        await asyncio.sleep(30)
        yield

    async with client_for(
        provider(fake), gate=stuck_gate, timeout_s=0.3, budget_includes_gate=True
    ) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("never admitted"))

    assert (caught.value.code, caught.value.attempts) == ("timeout", 0)
    assert fake.calls == []


# -- secrets -----------------------------------------------------------------------------------


async def test_the_api_key_appears_in_no_error(fake: FakeLLM) -> None:
    fake.api_key = "the-right-key"
    records: list[AttemptRecord] = []
    async with client_for(provider(fake, api_key=SECRET), on_attempt=records.append) as client:
        with pytest.raises(LLMGaveUp) as caught:
            await client.complete(ask("let me in"))

    # the fake echoes the key it was given, like the real platforms do
    assert caught.value.code == "http_401"
    assert "Incorrect API key provided" in caught.value.errors[0].message
    for text in (
        str(caught.value),
        repr(caught.value),
        *(str(error) for error in caught.value.errors),
        *(repr(record) for record in records),
        repr(provider(fake, api_key=SECRET)),
    ):
        assert SECRET not in text


async def test_a_borrowed_http_client_stays_open(fake: FakeLLM) -> None:
    async with httpx.AsyncClient() as http:
        client = LLMClient([provider(fake)], http=http)
        await client.complete(ask("borrowed"))
        await client.aclose()
        assert not http.is_closed
