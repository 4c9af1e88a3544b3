"""Write the secrets compose.yaml mounts (compose `secrets:`), once, into ./secrets beside it:

- postgres_password, and postgres_url (the services' DSN with that password);
- redis.acl (the `default` user with the SHA-256 of a new password, and a `healthcheck` user that
  may only PING), and redis_url (the services' URL with that password);
- callback_key (signs subscription callbacks: gateway, notifier, taskengine), jwt_secret (the
  gateway's HS256 key; `zhongshu token create` signs with it);
- model_api_key: from --model-api-key-file, else empty (the agent then answers that no model
  is configured; MODEL_ENDPOINT is in .env).

Existing files are kept (rotate one by deleting it and running this again, then restarting what
reads it). The folder is 0700; the files are 0644 so the containers' own users (postgres, redis,
the hub's 10001) can read their bind mounts. Standard library only: run it with any Python 3.

    python3 make_secrets.py [--model-api-key-file FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSTGRES = "postgresql://zhongshu:{password}@postgres:5432/zhongshu"
REDIS = "redis://:{password}@redis:6379/0"


def write(folder: Path, name: str, text: str) -> bool:
    path = folder / name
    if path.exists():
        return False
    path.write_text(text)
    path.chmod(0o644)
    return True


def read_or_make(folder: Path, name: str) -> str:
    path = folder / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)  # URL-safe: goes into URLs unescaped
    write(folder, name, value + "\n")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=HERE / "secrets")
    parser.add_argument("--model-api-key-file", type=Path)
    args = parser.parse_args()
    folder: Path = args.dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)

    postgres = read_or_make(folder, "postgres_password")
    write(folder, "postgres_url", POSTGRES.format(password=postgres) + "\n")
    redis = read_or_make(folder, ".redis_password")
    digest = hashlib.sha256(redis.encode()).hexdigest()
    write(
        folder,
        "redis.acl",
        f"user default on #{digest} ~* &* +@all\nuser healthcheck on nopass -@all +ping\n",
    )
    write(folder, "redis_url", REDIS.format(password=redis) + "\n")
    read_or_make(folder, "callback_key")
    read_or_make(folder, "jwt_secret")
    if args.model_api_key_file:
        (folder / "model_api_key").unlink(missing_ok=True)
        write(folder, "model_api_key", args.model_api_key_file.read_text().strip() + "\n")
    else:
        write(folder, "model_api_key", "")
    print(f"secrets in {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
