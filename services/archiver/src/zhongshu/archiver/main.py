"""archiver: drains every stream into monthly, compressed JSON Lines in object storage and
watches that nothing leaves the bus unarchived. Wiring only."""

from __future__ import annotations

from zhongshu.archiver import runner
from zhongshu.archiver.runner import Archiver
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.contracts import channels
from zhongshu.runtime import Service


def build_service() -> Service[ArchiverSettings, Archiver]:
    """A fresh service (tests run several in one process)."""
    service = Service(
        "archiver",
        ArchiverSettings,
        runner.lifespan,
        description="Monthly cold archive of every stream.",
        publishes=[channels.ALERTS],
        receives=channels.CHANNELS,  # its own stream drain, not the consume loop
    )
    service.ready_when("object_store", Archiver.check_store)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
