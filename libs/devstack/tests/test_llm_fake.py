"""The fake LLM behaves like an OpenAI-compatible server, and its knobs do what they say, in
process and as a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zhongshu.devstack.fakes.llm import FakeLLM, LLMCall

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def chat(text: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **extra,
    }


async def stream_chunks(
    http: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    async with http.stream("POST", f"{url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def contents(chunks: list[dict[str, Any] | str]) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"]
        for c in chunks
        if isinstance(c, dict) and c["choices"] and "content" in c["choices"][0]["delta"]
    ]


async def test_unstreamed_answer_echoes_the_last_user_message(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{fake.url}/chat/completions", json=chat("hello world"))
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Answer: hello world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == math.ceil(len("hello world") / 4)
    assert body["usage"]["completion_tokens"] == math.ceil(len("Answer: hello world") / 4)
    assert fake.outcomes() == ["ok"]
    assert fake.calls[0].body["messages"][0]["content"] == "hello world"


async def test_streamed_answer_comes_word_by_word_then_usage_and_done(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    body = chat("one two", stream=True, stream_options={"include_usage": True})
    chunks = await stream_chunks(http, fake.url, body)
    assert contents(chunks) == ["Answer:", " one", " two"]
    assert chunks[-1] == "[DONE]"
    finish, usage = chunks[-3], chunks[-2]
    assert isinstance(finish, dict)
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert isinstance(usage, dict)
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] > 0

    without_usage = await stream_chunks(http, fake.url, chat("x", stream=True))
    assert all("usage" not in c for c in without_usage if isinstance(c, dict))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_directive_gets_a_tool_call_and_its_result_an_answer(
    fake: FakeLLM, http: httpx.AsyncClient, stream: bool
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    ask = chat('find it [[tool:lookup {"q": "nats"}]]', stream=stream, tools=tools)
    if stream:
        chunks = await stream_chunks(http, fake.url, ask)
        deltas = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if isinstance(c, dict) and "tool_calls" in c["choices"][0]["delta"]
        ]
        assert deltas[0]["function"]["name"] == "lookup"
        call_id = deltas[0]["id"]
        assert "".join(d["function"]["arguments"] for d in deltas) == '{"q": "nats"}'
        assert len(deltas) > 2, "arguments come in pieces"
        finishes = [
            c["choices"][0]["finish_reason"] for c in chunks if isinstance(c, dict) and c["choices"]
        ]
        assert finishes[-1] == "tool_calls"
    else:
        body = (await http.post(f"{fake.url}/chat/completions", json=ask)).json()
        [call] = body["choices"][0]["message"]["tool_calls"]
        assert call["function"] == {"name": "lookup", "arguments": '{"q": "nats"}'}
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        call_id = call["id"]
    assert fake.outcomes() == ["tool_calls"]

    answered = {
        **ask,
        "stream": False,
        "messages": [
            *ask["messages"],
            {"role": "assistant", "content": None, "tool_calls": [{"id": call_id}]},
            {"role": "tool", "tool_call_id": call_id, "content": "found 3"},
        ],
    }
    body = (await http.post(f"{fake.url}/chat/completions", json=answered)).json()
    assert body["choices"][0]["message"]["content"] == "Answer: found 3"

    not_offered = chat("[[tool:lookup {}]]")
    body = (await http.post(f"{fake.url}/chat/completions", json=not_offered)).json()
    assert body["choices"][0]["message"]["content"] == "Answer: [[tool:lookup {}]]"


async def test_tests_can_replace_the_answer(fake: FakeLLM, http: httpx.AsyncClient) -> None:
    fake.answer = lambda body: f"{len(body['messages'])} message(s)"
    body = (await http.post(f"{fake.url}/chat/completions", json=chat("hi"))).json()
    assert body["choices"][0]["message"]["content"] == "1 message(s)"


async def test_fail_next_answers_openai_errors_with_retry_after(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    fake.fail_next(2, status=429, retry_after_s=1.5)
    statuses = []
    for _ in range(3):
        response = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
        statuses.append(response.status_code)
    assert statuses == [429, 429, 200]
    assert fake.outcomes() == ["http_429", "http_429", "ok"]
    fake.fail_next(1, status=503)
    response = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert set(response.json()["error"]) == {"message", "type", "code"}
    fake.fail_next(1, status=429, retry_after_s=1.5)
    response = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
    assert response.headers["retry-after"] == "1.5"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_fail_for_fails_every_call_until_it_ends(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    fake.fail_for(0.3, status=502)
    first = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
    second = await http.post(f"{fake.url}/embeddings", json={"input": ["x"]})
    await asyncio.sleep(0.35)
    third = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
    assert (first.status_code, second.status_code, third.status_code) == (502, 502, 200)
    assert first.json()["error"]["type"] == "server_error"


async def test_a_wrong_key_is_refused_with_401(fake: FakeLLM, http: httpx.AsyncClient) -> None:
    fake.api_key = "right"
    url = f"{fake.url}/chat/completions"
    refused = await http.post(url, json=chat("x"), headers={"authorization": "Bearer wrong"})
    missing = await http.post(url, json=chat("x"))
    allowed = await http.post(url, json=chat("x"), headers={"authorization": "Bearer right"})
    assert (refused.status_code, missing.status_code, allowed.status_code) == (401, 401, 200)
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert "wrong" in refused.json()["error"]["message"], "echoed, as real providers do"


async def test_a_stall_holds_until_the_client_gives_up(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    fake.stall_next(2, after_chunks=1)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(f"{fake.url}/chat/completions", json=chat("x"), timeout=0.3)
    seen: list[str] = []

    async def read_stream() -> None:
        async with http.stream(
            "POST", f"{fake.url}/chat/completions", json=chat("a b", stream=True), timeout=0.3
        ) as response:
            async for line in response.aiter_lines():
                seen.append(line)

    with pytest.raises(httpx.ReadTimeout):
        await read_stream()
    [data] = [line for line in seen if line.startswith("data:")]
    assert '"content": "Answer:"' in data
    assert fake.outcomes() == ["stalled", "stalled"]
    after = await http.post(f"{fake.url}/chat/completions", json=chat("x"), timeout=5)
    assert after.status_code == 200


async def test_cut_breaks_off_the_answer(fake: FakeLLM, http: httpx.AsyncClient) -> None:
    fake.cut_next(2, after_chunks=1)
    chunks = await stream_chunks(http, fake.url, chat("a b c", stream=True))
    assert contents(chunks) == ["Answer:"]
    assert "[DONE]" not in chunks
    response = await http.post(f"{fake.url}/chat/completions", json=chat("x"))
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert fake.outcomes() == ["cut", "cut"]


async def test_latency_comes_before_the_first_byte(http: httpx.AsyncClient) -> None:
    async with FakeLLM(latency_s=0.2) as fake:
        started = time.monotonic()
        await http.post(f"{fake.url}/chat/completions", json=chat("x"))
        assert time.monotonic() - started >= 0.2


async def test_embeddings_are_batched_and_deterministic(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    url = f"{fake.url}/embeddings"
    batch = (await http.post(url, json={"model": "e", "input": ["a", "b", "a"]})).json()
    single = (await http.post(url, json={"model": "e", "input": "b"})).json()
    vectors = [item["embedding"] for item in batch["data"]]
    assert [item["index"] for item in batch["data"]] == [0, 1, 2]
    assert vectors[0] == vectors[2] != vectors[1]
    assert single["data"][0]["embedding"] == vectors[1]
    assert all(math.isclose(sum(v * v for v in vec), 1.0, abs_tol=1e-4) for vec in vectors)
    assert len(vectors[0]) == fake.embedding_dims
    assert batch["usage"]["prompt_tokens"] == 3
    assert [c.kind for c in fake.calls] == ["embeddings", "embeddings"]


async def test_models_are_listed(fake: FakeLLM, http: httpx.AsyncClient) -> None:
    body = (await http.get(f"{fake.url}/models")).json()
    assert body["data"][0]["id"] == fake.model
    assert fake.calls == []


def test_max_calls_in_window_counts_arrivals_in_any_sliding_window() -> None:
    fake = FakeLLM()
    try:
        for at in (0.0, 0.5, 0.99, 1.0, 1.2, 1.3, 3.0):
            fake.calls.append(LLMCall(at=at, wall=at, kind="chat", body={}))
        assert fake.max_calls_in_window(1.0) == 5  # 0.5 … 1.3
        assert fake.max_calls_in_window(0.25) == 3  # 0.99, 1.0, 1.2
        assert fake.max_calls_in_window(1.0, kind="embeddings") == 0
        fake.reset()
        assert fake.calls == []
        assert fake.max_calls_in_window() == 0
    finally:
        fake._sock.close()


# -- as a process ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_process(*args: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zhongshu.devstack.fakes.llm",
        "--port",
        "0",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.match(r"READY fake-llm url=(http://127\.0\.0\.1:\d+/v1)$", line.strip())
        assert match, f"unexpected first line: {line!r}"
        yield match.group(1)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_standalone_process_serves_reports_and_obeys(http: httpx.AsyncClient) -> None:
    # llama.cpp's server arguments are taken too, so `zhongshu up --local-model` can run it
    llama_args = ("--model", "/models/qwen.gguf", "--model_alias", "qwen", "--n_ctx", "2048")
    async with fake_process("--latency-ms", "0", "--api-key", "k1", *llama_args) as url:
        auth = {"authorization": "Bearer k1"}
        models = (await http.get(f"{url}/models")).json()
        assert [m["id"] for m in models["data"]] == ["qwen"]
        before = time.time()
        ok = await http.post(f"{url}/chat/completions", json=chat("hi"), headers=auth)
        assert ok.json()["choices"][0]["message"]["content"] == "Answer: hi"

        control = await http.post(
            f"{url.removesuffix('/v1')}/_control",
            json={"fail_next": {"n": 1, "status": 429, "retry_after_s": 2}, "latency_ms": 50},
        )
        assert control.json()["failures_queued"] == 1
        assert control.json()["latency_ms"] == 50
        limited = await http.post(f"{url}/chat/completions", json=chat("hi"), headers=auth)
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
        refused = await http.post(f"{url}/chat/completions", json=chat("hi"))
        assert refused.status_code == 401

        calls = (await http.get(f"{url.removesuffix('/v1')}/_calls")).json()
        assert calls["count"] == 3
        assert [c["outcome"] for c in calls["calls"]] == ["ok", "http_429", "http_401"]
        assert all(before <= c["at"] <= time.time() for c in calls["calls"])
        later = (await http.get(f"{url.removesuffix('/v1')}/_calls?since=2")).json()
        assert [c["outcome"] for c in later["calls"]] == ["http_401"]

        await http.post(f"{url.removesuffix('/v1')}/_control", json={"reset": True})
        assert (await http.get(f"{url.removesuffix('/v1')}/_calls")).json()["count"] == 0
