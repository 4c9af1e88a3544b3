"""Router: whitelist, cluster-wide rate limits and classification of every inbound chat event.
Consumes ``chat.inbound.>``; produces ``chat.command.*``, ``chat.query.*``, ``alert.*``,
``audit.*`` and direct replies on ``chat.reply.*`` (see the README)."""

from __future__ import annotations

from zhongshu.router.handlers import build_service

service = build_service()

if __name__ == "__main__":
    service.main()
