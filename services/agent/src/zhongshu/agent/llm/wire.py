"""Our values to and from OpenAI chat-completions JSON, streamed or not. Lenient on input, as
the providers differ: extra fields are ignored, tool calls may come without ``index`` or
``id``, arguments may come as an object, the usage may or may not come."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from zhongshu.agent.llm.sse import DONE
from zhongshu.agent.llm.types import ChatMessage, ChatRequest, ChatResult, ToolCall, Usage


class WireError(Exception):
    """The provider answered, but not something we can use (``bad_response``), or it reported an
    error inside the stream (``stream_error``). Either way another attempt may do better."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_request(request: ChatRequest, model: str) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [_encode_message(message) for message in request.messages],
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return msgspec.json.encode(body)


def _encode_message(message: ChatMessage) -> dict[str, Any]:
    # content is always a string: some providers refuse null even beside tool_calls
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def decode_completion(raw: bytes) -> ChatResult:
    """A whole (non-streamed) ``chat.completion`` body."""
    body = _decode_object(raw, "the response")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if "error" in body:
            raise WireError("bad_response", f"error instead of choices: {error_text(body)}")
        raise WireError("bad_response", "the response has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise WireError("bad_response", "the first choice has no message")
    calls = _ToolCalls()
    for position, call in enumerate(_list(message.get("tool_calls"))):
        calls.add(call, default_index=position)
    tool_calls = calls.result()
    finish = choices[0].get("finish_reason")
    return ChatResult(
        text=_text(message.get("content")),
        tool_calls=tool_calls,
        finish_reason=finish if isinstance(finish, str) and finish else _default_finish(tool_calls),
        usage=_usage(body.get("usage")),
    )


class StreamState:
    """Folds ``chat.completion.chunk`` payloads into one result: content deltas appended, tool
    call deltas accumulated by index, the usage taken from whichever chunk carries it."""

    def __init__(self) -> None:
        self.text = ""
        self.done = False
        self._calls = _ToolCalls()
        self._finish: str | None = None
        self._usage = Usage()

    def add(self, payload: str) -> bool:
        """Fold one event's data in; True when the text grew."""
        if payload == DONE:
            self.done = True
            return False
        chunk = _decode_object(payload.encode(), "a stream chunk")
        if chunk.get("error") is not None:
            raise WireError("stream_error", error_text(chunk))
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        grew = False
        for choice in _list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = _text(delta.get("content"))
                if content:
                    self.text += content
                    grew = True
                for call in _list(delta.get("tool_calls")):
                    self._calls.add(call, default_index=None)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self._finish = finish
        return grew

    def result(self) -> ChatResult:
        if not self.done and self._finish is None:
            raise WireError("bad_response", "the stream ended before the answer finished")
        tool_calls = self._calls.result()
        return ChatResult(
            text=self.text,
            tool_calls=tool_calls,
            finish_reason=self._finish or _default_finish(tool_calls),
            usage=self._usage,
        )


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments = ""


class _ToolCalls:
    """Tool calls built from deltas: ``id`` and ``name`` arrive once, ``arguments`` in pieces."""

    def __init__(self) -> None:
        self._by_index: dict[int, _PartialCall] = {}

    def add(self, call: object, *, default_index: int | None) -> None:
        if not isinstance(call, dict):
            raise WireError("bad_response", "a tool call is not an object")
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) else ""
        partial = self._by_index.setdefault(
            self._index_of(call.get("index"), call_id, default_index), _PartialCall()
        )
        if call_id and not partial.id:
            partial.id = call_id
        name = function.get("name")
        if isinstance(name, str) and name and not partial.name:
            partial.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            partial.arguments += arguments
        elif arguments is not None:  # an object instead of JSON text (some local servers)
            partial.arguments += json.dumps(arguments, ensure_ascii=False)

    def _index_of(self, index: object, call_id: str, default_index: int | None) -> int:
        if isinstance(index, int):
            return index
        if default_index is not None:
            return default_index
        for known, partial in self._by_index.items():  # no index: match by id, else continue
            if call_id and partial.id == call_id:
                return known
        if call_id or not self._by_index:
            return len(self._by_index)
        return max(self._by_index)

    def result(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self._by_index):
            partial = self._by_index[index]
            if not partial.name:
                raise WireError("bad_response", "a tool call came without a function name")
            calls.append(
                ToolCall(
                    id=partial.id or f"call_{index}",
                    name=partial.name,
                    arguments=partial.arguments or "{}",
                )
            )
        return tuple(calls)


def error_text(body: object) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": …}}``) or of the
    ``{"code", "message"}`` shape some gateways use."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or error.get("code")
            return str(message) if message is not None else ""
        if isinstance(error, str):
            return error
    return ""


def _decode_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise WireError("bad_response", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise WireError("bad_response", f"{what} is not a JSON object")
    return value


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": …}]
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _usage(value: object) -> Usage:
    if not isinstance(value, dict):
        return Usage()
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=completion if isinstance(completion, int) else 0,
    )


def _default_finish(tool_calls: tuple[ToolCall, ...]) -> str:
    return "tool_calls" if tool_calls else "stop"
