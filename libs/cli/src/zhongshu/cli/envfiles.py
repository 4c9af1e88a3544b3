"""Secrets from files for ``zhongshu run``: ``NAME_FILE=/run/secrets/x`` sets ``NAME`` to the
file's content, the convention of Docker's official images. A container gets its credentials as
files (compose ``secrets:``, Kubernetes secret volumes) while the services read the environment
(``ZHONGSHU_POSTGRES_URL``, ``ZHONGSHU_JWT_SECRET``, ``MODEL_API_KEY`` ...), so nothing secret sits
in the compose file, ``docker inspect`` or the image.

Only the hub's own variables are read this way (``ZHONGSHU_*``, ``MODEL_*`` and the object store's
AWS keys): other programs' ``*_FILE`` variables (``SSL_CERT_FILE``, ``AWS_CONFIG_FILE``) are paths
in their own right. One trailing newline is dropped (editors add one). A name set both directly
and by file is refused, as is a file that cannot be read; errors name the variable and the path,
never the content."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from zhongshu.cli.console import CliError

SUFFIX = "_FILE"
PREFIXES = ("ZHONGSHU_", "MODEL_")
NAMES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _ours(name: str) -> bool:
    return bool(_NAME.match(name)) and (name.startswith(PREFIXES) or name in NAMES)


def load(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set every ``NAME`` that has a ``NAME_FILE`` in `environ` (default ``os.environ``); the
    names set, sorted."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for key, value in env.items():
        if not key.endswith(SUFFIX) or not value:
            continue
        name = key.removesuffix(SUFFIX)
        if not _ours(name):
            continue
        if env.get(name):
            raise CliError(f"both {name} and {key} are set: keep one")
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CliError(f"{key}: cannot read {value} ({reason})") from None
        found[name] = text.removesuffix("\n").removesuffix("\r")
    env.update(found)
    return sorted(found)
