"""The OpenAI wire format, without a server: request bodies, whole answers, and streams as the
providers send them (OpenAI's published examples, and the looser shapes of other servers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from zhongshu.agent.llm.sse import sse_data
from zhongshu.agent.llm.types import ChatMessage, ChatRequest, ToolCall, ToolSpec, Usage
from zhongshu.agent.llm.wire import StreamState, WireError, decode_completion, encode_request


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def events(*lines: str) -> list[str]:
    return [data async for data in sse_data(lines_of(*lines))]


def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


def fold(*payloads: str) -> StreamState:
    state = StreamState()
    for payload in payloads:
        state.add(payload)
    return state


# -- SSE ---------------------------------------------------------------------------------------


async def test_sse_events_are_split_at_blank_lines() -> None:
    assert await events("data: {}", "", ": keep-alive", "", "data: [DONE]", "") == [
        "{}",
        "[DONE]",
    ]


async def test_sse_data_without_a_space_and_other_fields_are_accepted() -> None:
    assert await events("event: message", "id: 7", "data:{}", "", "retry: 10", "data:[DONE]") == [
        "{}",
        "[DONE]",
    ]


async def test_sse_events_without_blank_lines_between_still_come_one_by_one() -> None:
    assert await events('data: {"a": 1}', 'data: {"b": 2}', "data: [DONE]") == [
        '{"a": 1}',
        '{"b": 2}',
        "[DONE]",
    ]


async def test_sse_multi_line_data_is_joined() -> None:
    assert await events('data: {"a":', "data: 1}", "") == ['{"a":\n1}']


# -- requests ----------------------------------------------------------------------------------


def test_request_body_in_openai_shape() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage(role="user", content="weather?"),
            ChatMessage(
                role="assistant",
                tool_calls=(ToolCall(id="call_1", name="weather", arguments='{"city":"Oslo"}'),),
            ),
            ChatMessage(role="tool", tool_call_id="call_1", content="-3 °C"),
        ),
        tools=(ToolSpec(name="weather", description="Weather", parameters={"type": "object"}),),
        stream=False,
    )
    assert json.loads(encode_request(request, "deepseek-chat")) == {
        "model": "deepseek-chat",
        "stream": False,
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": "-3 °C", "tool_call_id": "call_1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather",
                    "parameters": {"type": "object"},
                },
            }
        ],
    }


# -- whole answers -----------------------------------------------------------------------------

OPENAI_TOOL_CALL_COMPLETION = {  # the chat.completion example from OpenAI's API reference
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{\n"location": "Boston, MA"\n}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def test_whole_answer_with_a_tool_call() -> None:
    result = decode_completion(json.dumps(OPENAI_TOOL_CALL_COMPLETION).encode())
    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (
        ToolCall(
            id="call_abc123",
            name="get_current_weather",
            arguments='{\n"location": "Boston, MA"\n}',
        ),
    )
    assert result.usage == Usage(prompt_tokens=82, completion_tokens=17)


def test_whole_answer_with_arguments_as_an_object_and_no_usage() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
                }
            }
        ]
    }
    result = decode_completion(json.dumps(body).encode())
    assert result.tool_calls == (ToolCall(id="call_0", name="f", arguments='{"x": 1}'),)
    assert (result.finish_reason, result.usage) == ("tool_calls", Usage())


@pytest.mark.parametrize(
    "raw",
    [b"<html>bad gateway</html>", b"[]", b'{"choices": []}', b'{"error": {"message": "busy"}}'],
)
def test_unusable_whole_answers_are_bad_responses(raw: bytes) -> None:
    with pytest.raises(WireError) as caught:
        decode_completion(raw)
    assert caught.value.code == "bad_response"


# -- streams -----------------------------------------------------------------------------------


def test_streamed_text_with_usage_in_the_last_chunk() -> None:
    state = fold(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk({}, "stop"),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
        "[DONE]",
    )
    result = state.result()
    assert (result.text, result.finish_reason) == ("Hello there", "stop")
    assert result.usage == Usage(prompt_tokens=9, completion_tokens=2)


def test_add_says_when_the_text_grew() -> None:
    state = StreamState()
    assert state.add(chunk({"role": "assistant"})) is False
    assert state.add(chunk({"content": "x"})) is True
    assert state.add(chunk({"reasoning_content": "thinking"})) is False  # DeepSeek's reasoning
    assert state.text == "x"


def test_streamed_tool_call_from_openais_example_deltas() -> None:
    # The tool_calls deltas of OpenAI's function-calling streaming guide, in order.
    pieces = ['{"', "location", '":"', "Paris", ",", " France", '"}']
    deltas = [
        {
            "index": 0,
            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "function": {"arguments": "", "name": "get_weather"},
            "type": "function",
        },
        *(
            {"index": 0, "id": None, "function": {"arguments": p, "name": None}, "type": None}
            for p in pieces
        ),
    ]
    state = fold(*(chunk({"tool_calls": [d]}) for d in deltas), chunk({}, "tool_calls"), "[DONE]")
    assert state.result().tool_calls == (
        ToolCall(
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
            name="get_weather",
            arguments='{"location":"Paris, France"}',
        ),
    )


def test_parallel_tool_calls_are_kept_apart_by_index() -> None:
    state = fold(
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]}
        ),
        chunk(
            {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}]}
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "", "function": {"arguments": "[1]"}}]}),
        "[DONE]",
    )
    result = state.result()
    assert result.tool_calls == (
        ToolCall(id="a", name="f", arguments="{}"),
        ToolCall(id="b", name="g", arguments="[1]"),
    )
    assert result.finish_reason == "tool_calls"


def test_tool_call_deltas_without_index_follow_their_id() -> None:
    state = fold(
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}),
        chunk({"tool_calls": [{"function": {"arguments": ": 1}"}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    )
    assert state.result().tool_calls == (
        ToolCall(id="a", name="f", arguments='{"x": 1}'),
        ToolCall(id="b", name="g", arguments="{}"),
    )


def test_a_finish_without_done_is_enough() -> None:
    assert fold(chunk({"content": "ok"}, "stop")).result().text == "ok"


def test_a_stream_that_stops_early_is_a_bad_response() -> None:
    with pytest.raises(WireError) as caught:
        fold(chunk({"content": "half"})).result()
    assert caught.value.code == "bad_response"


def test_an_error_inside_the_stream_is_a_stream_error() -> None:
    with pytest.raises(WireError) as caught:
        fold(json.dumps({"error": {"message": "overloaded", "type": "server_error"}}))
    assert (caught.value.code, caught.value.message) == ("stream_error", "overloaded")


def test_a_chunk_that_is_not_json_is_a_bad_response() -> None:
    with pytest.raises(WireError) as caught:
        fold("{not json")
    assert caught.value.code == "bad_response"
