"""A service process that burns a core: it beats like any service while a thread spins
(the watchdog's process-CPU warning test). Run: python burner.py NATS_URL."""

from __future__ import annotations

import asyncio
import sys
import threading

from zhongshu.runtime import Service, ServiceSettings


def spin() -> None:
    while True:
        pass


async def main(url: str) -> None:
    service: Service[ServiceSettings, None] = Service("burner", ServiceSettings)
    await service.start(ServiceSettings(nats_url=url, heartbeat_interval_s=0.2))
    threading.Thread(target=spin, daemon=True).start()
    print("READY burner", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
