"""The object store behind a small Protocol, on ``obstore`` (local filesystem, S3-compatible, GCS,
Azure, in-memory for tests), opened from one URL.

Every put is whole: obstore's local store writes a staging file and renames it, and S3-compatible
stores make an object visible only once its PUT (or multipart upload) completes, so a reader never
sees half an object and a crash leaves either the old object or the new one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Protocol, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import obstore
from obstore.store import LocalStore, MemoryStore, from_url

# obstore's HTTP client options (ClientConfig); every other query parameter configures the store.
_CLIENT_OPTIONS: Final = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "pool_idle_timeout",
        "timeout",
        "proxy_url",
        "user_agent",
        "http1_only",
        "http2_only",
    }
)
_SECRET_WORDS: Final = ("secret", "key", "token", "password", "credential", "signature")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


class StoreError(Exception):
    """The store could not be opened or did not answer; the text names it without secrets."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class ObjectStore(Protocol):
    """What the archiver needs from object storage."""

    @property
    def url(self) -> str:
        """The store's URL with credentials removed (for logs and errors)."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""

    async def list(self, prefix: str = "") -> list[StoredObject]: ...

    async def delete(self, key: str) -> None: ...


def redact_store_url(url: str) -> str:
    """The URL with user:password and secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=***" if any(word in k.lower() for word in _SECRET_WORDS) else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def resolve_local_url(url: str, base: Path | None = None) -> str:
    """``file://./data/archive`` (or a bare path) as an absolute ``file://`` URL: relative paths
    resolve against ``base`` (default: the working directory) once, at start, so a service and
    the CLI run from the same directory agree on where the archive is."""
    if "://" not in url:
        path = Path(url)
    elif url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
    else:
        return url
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve().as_uri()


def open_store(url: str) -> ObjectStore:
    """Open the store at ``url``; :class:`StoreError` for an unknown scheme or option.

    Local: ``file://PATH`` or a bare path (created if missing). In memory: ``memory://``.
    Others: obstore's URLs, with store options as query parameters, e.g.
    ``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1``; an ``http://``
    endpoint enables plain HTTP; ``max_retries`` and ``retry_timeout`` (seconds) bound
    obstore's own retries of a failed request (10 and 180 s by default). Credentials come
    from the provider's environment variables (``AWS_ACCESS_KEY_ID`` ...), which obstore
    reads, or from query parameters (hidden in every message)."""
    shown = redact_store_url(url)
    try:
        if url.startswith("memory://"):
            return ObstoreStore(MemoryStore(), shown)
        if "://" not in url or url.startswith("file://"):
            resolved = resolve_local_url(url)
            return ObstoreStore(LocalStore.from_url(resolved, mkdir=True), resolved)
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        client: dict[str, Any] = {
            k: _option(v) for k, v in options.items() if k.lower() in _CLIENT_OPTIONS
        }
        retry: dict[str, Any] = {}
        if "max_retries" in options:
            retry["max_retries"] = int(options.pop("max_retries"))
        if "retry_timeout" in options:
            retry["retry_timeout"] = timedelta(seconds=float(options.pop("retry_timeout")))
        config = {k: v for k, v in options.items() if k.lower() not in _CLIENT_OPTIONS}
        if any(str(v).startswith("http://") for k, v in config.items() if "endpoint" in k):
            client.setdefault("allow_http", True)
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        store = cast(Any, from_url)(
            bare, client_options=client or None, retry_config=retry or None, **config
        )
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open object store {shown}: {_reason(exc)}") from None
    return ObstoreStore(store, shown)


def _option(value: str) -> str | bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    return value


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class ObstoreStore:
    """:class:`ObjectStore` on an obstore store."""

    def __init__(self, store: Any, url: str) -> None:
        self._store = store
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    async def put(self, key: str, data: bytes) -> None:
        try:
            await obstore.put_async(self._store, key, data)
        except Exception as exc:
            raise StoreError(f"cannot write {key} to {self._url}: {_reason(exc)}") from None

    async def get(self, key: str) -> bytes | None:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {key} from {self._url}: {_reason(exc)}") from None

    async def list(self, prefix: str = "") -> list[StoredObject]:
        try:
            found: list[StoredObject] = []
            async for batch in obstore.list(self._store, prefix or None, chunk_size=1000):
                found.extend(StoredObject(meta["path"], int(meta["size"])) for meta in batch)
        except Exception as exc:
            raise StoreError(f"cannot list {self._url}: {_reason(exc)}") from None
        found.sort(key=lambda o: o.key)
        return found

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise StoreError(f"cannot delete {key} from {self._url}: {_reason(exc)}") from None


async def check_reachable(store: ObjectStore, timeout_s: float = 10.0) -> None:
    """Raise :class:`StoreError` unless a listing answers within ``timeout_s``."""
    try:
        await asyncio.wait_for(store.list(".probe/"), timeout_s)
    except TimeoutError:
        raise StoreError(f"object store {store.url} did not answer within {timeout_s:g}s") from None
