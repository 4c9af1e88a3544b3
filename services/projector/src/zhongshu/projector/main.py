"""Projector: the warm tier in PostgreSQL and the hot task statuses in Redis, built from TASKS,
WORKFLOWS, DELIVERIES, AUDIT, SCHEDULES and the ``triggers``/``subscriptions`` buckets (see the
README)."""

from __future__ import annotations

from zhongshu.projector.handlers import build_service

service = build_service()

if __name__ == "__main__":
    service.main()
