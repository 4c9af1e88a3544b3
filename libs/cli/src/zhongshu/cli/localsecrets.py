"""The secrets a local hub needs but a newcomer has not set yet: the gateway's JWT signing secret
and the callback key that signs webhooks. ``zhongshu up`` generates each once, keeps it in the
data directory (mode 0600, never printed) and hands it to the services, so the hub starts with no
setup and tokens stay valid across restarts. An operator's own value (environment) always wins."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

GENERATED: Final = {
    "ZHONGSHU_JWT_SECRET": "jwt_secret",
    "ZHONGSHU_CALLBACK_KEY": "callback_key",
}
"""Environment variable -> file name under ``<data dir>/secrets``."""


def secrets_dir(data_dir: Path) -> Path:
    return data_dir / "secrets"


def ensure(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to the services' environment: each one not already set, read from
    its file or generated into it (48 random bytes, URL-safe)."""
    missing = {name: file for name, file in GENERATED.items() if not environ.get(name)}
    if not missing:
        return {}
    folder = secrets_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    values: dict[str, str] = {}
    for name, file in missing.items():
        path = folder / file
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        values[name] = path.read_text().strip()
    return values
