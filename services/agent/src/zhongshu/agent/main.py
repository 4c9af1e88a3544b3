"""Agent: LLM answers under a cluster-wide QPS cap, with cache, memory, tools and a task
lifecycle. Consumes ``chat.command.>`` and ``task.requested.>``; produces ``task.event.*`` and
``chat.reply.*`` (see the README)."""

from __future__ import annotations

from zhongshu.agent.handlers import build_service

service = build_service()

if __name__ == "__main__":
    service.main()
