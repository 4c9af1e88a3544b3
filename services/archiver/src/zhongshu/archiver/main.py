"""archiver: drains every stream into monthly, compressed JSON Lines in object storage and
watches that nothing leaves the bus unarchived. Wiring only."""

from __future__ import annotations

from zhongshu.archiver.runner import Archiver, open_configured_store
from zhongshu.archiver.settings import ArchiverSettings
from zhongshu.contracts import channels
from zhongshu.runtime import Service

ARCHIVER = "archiver"  # key of the running Archiver in service.state


def build_service() -> Service:
    """A fresh service (tests run several in one process)."""
    service = Service(
        "archiver",
        ArchiverSettings,
        description="Monthly cold archive of every stream.",
        publishes=[channels.ALERTS],
        receives=channels.CHANNELS,  # its own stream drain, not the consume loop
    )

    @service.on_startup
    async def start_archiving(svc: Service) -> None:
        settings = svc.settings
        assert isinstance(settings, ArchiverSettings)
        archiver = Archiver(svc, settings, open_configured_store(settings))
        svc.state[ARCHIVER] = archiver
        await archiver.start()

    @service.readiness("object_store")
    async def store_ready() -> bool:
        archiver = service.state.get(ARCHIVER)
        return archiver is not None and await archiver.check_store()

    @service.on_shutdown
    async def stop_archiving(svc: Service) -> None:
        if ARCHIVER in svc.state:
            await svc.state[ARCHIVER].stop(svc.settings.drain_timeout_s)

    return service


service = build_service()

if __name__ == "__main__":
    service.main()
