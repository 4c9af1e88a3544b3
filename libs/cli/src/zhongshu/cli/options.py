"""Options several commands share: the CLI's own and the groups services contribute
(`contributed.py`), so `--data-dir` reads the same everywhere."""

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Data directory of `zhongshu up`: its embedded NATS is used when "
        "ZHONGSHU_NATS_URL is not set.",
        show_default=True,
    ),
]
