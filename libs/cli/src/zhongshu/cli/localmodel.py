"""``zhongshu up --local-model PATH.gguf``: llama.cpp's OpenAI-compatible server
(``llama-cpp-python[server]``) as one more supervised child, with the agent pointed at it, so
the hub runs with no model provider at all.

``ZHONGSHU_LOCAL_MODEL_COMMAND`` replaces ``python -m llama_cpp.server`` (another server that
takes the same ``--model --host --port`` arguments; the tests use the fake LLM)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Final

from zhongshu.cli.console import CliError, uv_command
from zhongshu.cli.supervisor import ChildSpec
from zhongshu.devstack import free_port

NAME: Final = "local-model"
COMMAND_ENV: Final = "ZHONGSHU_LOCAL_MODEL_COMMAND"
HOST: Final = "127.0.0.1"


def install_hint() -> str:
    return (
        f"llama.cpp's server is not installed: run `{uv_command()} sync --extra local-model` "
        "(it compiles llama.cpp, a few minutes), or point MODEL_ENDPOINT at any "
        "OpenAI-compatible server instead"
    )


def _command() -> list[str]:
    override = os.environ.get(COMMAND_ENV, "").strip()
    if override:
        return shlex.split(override)
    if importlib.util.find_spec("llama_cpp") is None:
        raise CliError(install_hint())
    return [sys.executable, "-m", "llama_cpp.server"]


def model_name(path: Path) -> str:
    """What the agent asks for: the file's name without ``.gguf`` (llama.cpp serves one model
    under the alias it is given)."""
    return path.name.removesuffix(".gguf")


def check(path: Path) -> list[str]:
    """Fail before anything starts: the file and the server program must exist. Returns the
    server's command."""
    path = path.expanduser().absolute()
    if not path.is_file():
        raise CliError(f"--local-model: no such file: {path}")
    if path.suffix != ".gguf":
        raise CliError(f"--local-model: expected a .gguf model file, got {path.name}")
    return _command()


def child_spec(path: Path, env: dict[str, str]) -> tuple[ChildSpec, dict[str, str]]:
    """The server's child spec, and the variables that point the services at it."""
    command = check(path)
    path = path.expanduser().absolute()
    port = free_port()
    argv = [
        *command,
        "--model",
        str(path),
        "--model_alias",
        model_name(path),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    spec = ChildSpec(
        name=NAME,
        argv=argv,
        env=env,
        health_port=port,
        ready_path="/v1/models",
        fixed_port=True,
    )
    pointers = {
        "MODEL_ENDPOINT": f"http://{HOST}:{port}/v1",
        "MODEL_NAME": model_name(path),
    }
    return spec, pointers
