"""`/`: a minimal page pointing at the API's documentation (the full web console is not built
yet)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zhongshu</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2rem}</style></head>
<body><h1>zhongshu 中枢</h1>
<p>The hub's HTTP API: tasks, schedules, event triggers, workflows, subscriptions and quotas.</p>
<ul><li><a href="/docs">API documentation</a> (try it with a token)</li>
<li><a href="/openapi.json">OpenAPI document</a></li></ul>
<p>Get a token:
<code>zhongshu token create --tenant T --scope tasks:read --scope tasks:write</code></p>
</body></html>"""


@router.get("/", response_class=HTMLResponse)
async def home() -> HTMLResponse:
    return HTMLResponse(PAGE)
