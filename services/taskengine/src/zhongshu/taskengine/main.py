"""Task engine: event triggers and DAG workflow runs, one message per step. Consumes
``events.>``, ``task.requested.>``, ``task.event.>`` and ``workflow.>``; produces
``task.requested.*``, ``task.event.*``, ``workflow.*`` and ``chat.reply.*`` (see the README)."""

from __future__ import annotations

from zhongshu.taskengine.handlers import build_service

service = build_service()

if __name__ == "__main__":
    service.main()
