"""The agent's metrics (R14). Cache hits and limiter waits are defined next to the cache and
the limiter (``adapters``); these cover the model calls and the tasks."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INFERENCE_SECONDS = Histogram(
    "zhongshu_agent_inference_seconds",
    "Model calls, streaming and retries included (p99 from the buckets)",
    ["provider", "outcome"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60),
)
UPSTREAM_ATTEMPT_SECONDS = Histogram(
    "zhongshu_agent_upstream_attempt_seconds",
    "One HTTP attempt to a model provider",
    ["provider"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60),
)
UPSTREAM_ERRORS = Counter(
    "zhongshu_agent_upstream_errors_total",
    "Failed attempts to a model provider, by error code (http_429, http_500, timeout, ...)",
    ["provider", "code"],
)
TOKENS = Counter(
    "zhongshu_agent_tokens_total", "Tokens the providers reported", ["provider", "direction"]
)
TASKS = Counter("zhongshu_agent_tasks_total", "Tasks by how they ended", ["outcome"])
TOOL_CALLS = Counter(
    "zhongshu_agent_tool_calls_total", "Tool calls by tool and result", ["tool", "ok"]
)
