"""The ``zhongshu`` command: typer wiring only; each verb lives in its own module, imported
when its command runs (the runtime takes about a second to import; `--help` should not wait).
Command groups that belong to a service (``archive``, ``projections``) come from that service
through the ``zhongshu.cli`` entry point (`contributed.py`)."""

import enum
from pathlib import Path
from typing import Annotated

import typer

from zhongshu.cli import contributed, runstate, services
from zhongshu.cli.audit_cmd import app as audit_app
from zhongshu.cli.console import EXIT_USAGE, fail, quiet_client_logs, reported_errors
from zhongshu.cli.options import DataDir
from zhongshu.cli.token_cmd import app as token_app

app = typer.Typer(
    name="zhongshu",
    help="zhongshu (中枢): run the hub locally and operate its bus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    rich_markup_mode="markdown",
)
dlq_app = typer.Typer(
    help="Inspect and replay dead-lettered messages (the DLQ stream).", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")
config_app = typer.Typer(
    help="Validate zhongshu.yaml and load it into the running hub (the `config` KV bucket).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
contributed.add_to(app)

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The configuration file (default: ZHONGSHU_CONFIG, else ./config/zhongshu.yaml).",
    ),
]


def _config_file(path: Path | None) -> Path:
    from zhongshu.runtime.hubconfig import config_path

    return path or config_path()


class LogFormat(enum.StrEnum):
    pretty = "pretty"
    json = "json"


def _nats_url(data_dir: Path) -> str:
    return runstate.resolve_nats_url(data_dir)


@app.command("up")
def up_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the stack keeps its data and logs.")
    ] = runstate.DEFAULT_DATA_DIR,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="NAME",
            help="Run only this service (repeat, or separate names with commas).",
        ),
    ] = None,
    no_services: Annotated[
        bool, typer.Option("--no-services", help="Start and provision the stack only.")
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="pretty: services' JSON logs as 'HH:MM:SS LEVEL message'; json: as emitted.",
        ),
    ] = LogFormat.pretty,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Stream replicas when provisioning.")
    ] = 1,
    ready_file: Annotated[
        Path | None,
        typer.Option(
            "--ready-file",
            metavar="PATH",
            help="Touch this file once every service is ready (removed again on exit).",
        ),
    ] = None,
    local_model: Annotated[
        Path | None,
        typer.Option(
            "--local-model",
            metavar="PATH.gguf",
            help="Also run llama.cpp's OpenAI-compatible server on this model and point the "
            "agent at it (needs `uv sync --extra local-model`).",
        ),
    ] = None,
    public: Annotated[
        str | None,
        typer.Option(
            "--public",
            metavar="HOST",
            envvar="ZHONGSHU_PUBLIC_HOST",
            help="Also serve https://HOST on ports 443 and 80 (a redirect): TLS 1.3 only, HSTS, "
            "a certificate from Let's Encrypt/ZeroSSL (ACME) unless --tls-cert is given. HOST's "
            "DNS must point here and both ports be reachable.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", metavar="PEM", help="Your own certificate for --public."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", metavar="PEM", help="The key of --tls-cert."),
    ] = None,
    bind: Annotated[
        str,
        typer.Option("--bind", metavar="ADDRESS", help="Interface for 443/80 (default: all)."),
    ] = "",
    acme_email: Annotated[
        str | None,
        typer.Option("--acme-email", help="Contact address for the ACME account (optional)."),
    ] = None,
) -> None:
    """Run everything locally: nats-server, PostgreSQL and Redis from wheels (no Docker),
    provision the streams, then every installed service, restarted with backoff if it crashes,
    behind Caddy on http://127.0.0.1:8000 (and https://HOST with --public).

    A dependency given by URL (ZHONGSHU_NATS_URL, ZHONGSHU_POSTGRES_URL, ZHONGSHU_REDIS_URL) is
    used instead of starting it. Ctrl-C or SIGTERM stops the services (they drain in-flight
    work), then the stack.
    """
    quiet_client_logs()
    with reported_errors():
        try:
            from zhongshu.cli import up
        except ModuleNotFoundError as exc:  # a service image: `zhongshu-cli` without `[up]`
            fail(
                f"`zhongshu up` needs the embedded stack, which is not installed ({exc.name}): "
                "install zhongshu-cli[up] (`uv sync` in a checkout); this environment runs one "
                "service with `zhongshu run NAME`"
            )

        up.run(
            up.UpOptions(
                data_dir=data_dir,
                only=only,
                no_services=no_services,
                log_format=log_format.value,
                replicas=replicas,
                ready_file=ready_file,
                local_model=local_model,
                public=up.public_options(public, tls_cert, tls_key, bind, acme_email),
            )
        )


@app.command("run")
def run_command(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help=f"Service to run; installed: {', '.join(services.names()) or 'none'}.",
        ),
    ],
) -> None:
    """Run one service in the foreground (configured by ZHONGSHU_* environment variables).

    Services are the packages registered in the `zhongshu.services` entry-point group.
    `NAME_FILE=/path` sets the variable NAME to that file's content (secrets mounted as files).
    """
    with reported_errors():
        from zhongshu.cli import envfiles

        envfiles.load()
        services.load(name).main()


@app.command("provision")
def provision_command(
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Replicas for every stream and bucket.")
    ] = 1,
    allow_data_loss: Annotated[
        bool,
        typer.Option(
            "--allow-data-loss",
            help="Apply changes that would delete stored events (shrinking limits, removing "
            "subjects). Archive first.",
        ),
    ] = False,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Create or update the streams and KV buckets declared in contracts.

    Connects to ZHONGSHU_NATS_URL (default nats://127.0.0.1:4222). Safe changes are applied;
    changes that would lose data are refused with the reason, and the command exits 1.
    """
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import provision_cmd

        provision_cmd.run(_nats_url(data_dir), replicas=replicas, allow_data_loss=allow_data_loss)


@config_app.command("check")
def config_check_command(file: ConfigFile = None) -> None:
    """Validate the configuration without applying it: every field, and every `${VAR}` and
    `${file:…}` reference resolvable in this environment. Exits 1 naming what is wrong."""
    with reported_errors():
        from zhongshu.cli import config_cmd

        config_cmd.check(_config_file(file))


@config_app.command("push")
def config_push_command(
    file: ConfigFile = None, data_dir: DataDir = runstate.DEFAULT_DATA_DIR
) -> None:
    """Validate the configuration, then store it in the `config` KV bucket; every running
    service applies it within seconds, without a restart. References (`${VAR}`) are stored
    unresolved, so secrets never reach the bus."""
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import config_cmd

        config_cmd.push(_nats_url(data_dir), _config_file(file))


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Streams (messages, bytes, first/last seq), their consumers (pending, ack pending,
    redelivered, waiting) and, while `zhongshu up` runs, each service's /readyz.

    Exits 1 when the bus is unreachable or a service is not ready.
    """
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import status

        status.run(_nats_url(data_dir), data_dir, as_json=as_json)


@app.command("trace")
def trace_command(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="A trace id (32 hex digits, the logs' trace.id), task id, event (envelope) id "
            "or platform message id.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Print one conversation's trace as a span tree: service, span, start offset, duration,
    status and the ids and outcomes that matter (task, message, model and tokens, platform
    send), from the TRACES stream the services record into when no collector is needed.

    Spans are kept 3 h, for the share of conversations ZHONGSHU_TRACE_SAMPLE records.
    Exits 1 when nothing is found or the bus is unreachable.
    """
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import trace_cmd

        trace_cmd.run(_nats_url(data_dir), ref, json_output=as_json)


@app.command("doctor")
def doctor_command(
    file: ConfigFile = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Data directory of `zhongshu up`: when one runs there, its HTTP port is "
            "expected to be in use.",
        ),
    ] = runstate.DEFAULT_DATA_DIR,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Only the local checks: no model, platform or clock probes."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", min=0.1, help="Per network probe."),
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check what usually goes wrong on a new machine, one line per check with the fix:

    - **python**: 3.11 or newer;
    - **http port**: the front door's port (ZHONGSHU_HTTP_PORT, default 8000) is free, or held
      by a `zhongshu up` already running in --data-dir (the other ports are chosen free);
    - **config**: zhongshu.yaml validates as `zhongshu config check` does, every problem named
      by its field (a missing file is only a warning);
    - **model**: MODEL_ENDPOINT and `model.providers` answer `GET …/models` and take the key;
    - **feishu / dingtalk APP**: each app's credentials are accepted by the platform's token
      endpoint (FEISHU_BASE_URL, DINGTALK_API_URL override the platforms' addresses);
    - **clock**: this machine's clock against the platforms' `Date`, warned beyond 30 s and
      failed beyond the signed callbacks' window (DingTalk 1 h, Feishu 8 h).

    Network probes run concurrently with a short timeout. Secrets are never printed.
    Exits 1 when a check fails, 0 otherwise (warnings included).
    """
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import doctor

        doctor.run(
            doctor.Options(
                config_path=_config_file(file),
                data_dir=data_dir,
                offline=offline,
                timeout_s=timeout,
            ),
            as_json=as_json,
        )


@dlq_app.command("list")
def dlq_list_command(
    stream: Annotated[
        str | None, typer.Option("--stream", help="Only messages from this stream.")
    ] = None,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Only messages this consumer gave up on.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output, payloads included.")
    ] = False,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """List dead-lettered messages, oldest first: DLQ sequence, original stream, consumer,
    subject and sequence, deliveries, when it failed and the last error.

    Reading creates no consumer and changes nothing.
    """
    quiet_client_logs()
    with reported_errors():
        from zhongshu.cli import dlq

        dlq.run_list(
            _nats_url(data_dir), stream=stream, consumer=consumer, limit=limit, as_json=as_json
        )


@dlq_app.command("replay")
def dlq_replay_command(
    seq: Annotated[
        list[int] | None,
        typer.Option("--seq", metavar="N", help="DLQ sequence to replay (repeat for more)."),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every message in the DLQ (after filters).")
    ] = False,
    stream: Annotated[
        str | None, typer.Option("--stream", help="Only messages from this stream.")
    ] = None,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Only messages this consumer gave up on.")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="SUBJECT", help="Publish here instead of the original subject."
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the messages in the DLQ after replaying.")
    ] = False,
    data_dir: DataDir = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Republish dead-lettered messages to their original subject (or --to), with their
    original headers, then delete them from the DLQ once the PubAck arrives (unless --keep).

    A replay on the original subject is seen by **every** consumer of that subject, not
    only the one that gave up; that is safe because handlers are idempotent by envelope id
    (outputs keep their deterministic ids and are dropped as duplicates). Each replay is
    published with `Nats-Msg-Id: replay:<dlq seq>`, so replaying the same message twice within
    the stream's duplicate window stores it once.
    """
    quiet_client_logs()
    with reported_errors():
        if bool(seq) == replay_all:
            fail("give either --seq N (one or more) or --all", code=EXIT_USAGE)
        from zhongshu.cli import dlq

        dlq.run_replay(
            _nats_url(data_dir),
            seqs=seq or [],
            replay_all=replay_all,
            stream=stream,
            consumer=consumer,
            to=to,
            keep=keep,
        )
