"""collect: one HTTP request; the response becomes the step's output, ``{status, json}`` when
it is JSON and ``{status, text}`` otherwise. An error status fails the attempt (and is retried
like any failure); a GET is safe to repeat after a crash, other methods are the author's call."""

from __future__ import annotations

import json
from typing import Any

import httpx

from zhongshu.taskengine.settings import TaskEngineSettings
from zhongshu.taskengine.steps.outcomes import Failed, Outcome, StepContext, Succeeded


async def run(ctx: StepContext) -> Outcome:
    return await fetch(ctx.engine.http, ctx.request.config, ctx.engine.settings)


async def fetch(
    http: httpx.AsyncClient, config: dict[str, Any], settings: TaskEngineSettings
) -> Outcome:
    url = config.get("url")
    if not isinstance(url, str) or not url:
        return Failed("config.url is missing")
    allowed = settings.taskengine_collect_allow
    if allowed and not any(url.startswith(prefix) for prefix in allowed):
        return Failed(f"{url} is not under ZHONGSHU_TASKENGINE_COLLECT_ALLOW")
    method = str(config.get("method", "GET")).upper()
    headers = config.get("headers") or {}
    body = config.get("body")
    content: dict[str, Any] = {}
    if isinstance(body, dict | list):
        content["json"] = body
    elif body is not None:
        content["content"] = str(body)
    limit = settings.taskengine_collect_max_bytes
    try:
        async with http.stream(method, url, headers=headers, **content) as response:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    break
    except httpx.HTTPError as exc:
        return Failed(f"{method} {url} failed: {type(exc).__name__}: {exc}")
    if response.status_code >= 400:
        return Failed(f"{method} {url} answered HTTP {response.status_code}")
    return Succeeded(_output(response, bytes(data), limit))


def _output(response: httpx.Response, data: bytes, limit: int) -> dict[str, Any]:
    output: dict[str, Any] = {"status": response.status_code}
    truncated = len(data) > limit
    if not truncated and "json" in response.headers.get("content-type", ""):
        try:
            output["json"] = json.loads(data)
            return output
        except ValueError:
            pass
    output["text"] = data[:limit].decode(response.encoding or "utf-8", errors="replace")
    if truncated:
        output["truncated"] = True
    return output
