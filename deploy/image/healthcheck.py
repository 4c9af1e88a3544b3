"""The image's HEALTHCHECK: the service is healthy while its `/readyz` answers 200 on its HTTP
(side) port, ``ZHONGSHU_HEALTH_PORT`` (8000 in the image). Standard library only: the image has
no curl, and this runs every few seconds."""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("ZHONGSHU_HEALTH_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.reason}", file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
