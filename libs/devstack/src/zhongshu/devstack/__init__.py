"""zhongshu's development stack: the embedded servers `zhongshu up` and the tests run (one module
per server), the pytest plugin (:mod:`zhongshu.devstack.testing`) and the fake platforms
(:mod:`zhongshu.devstack.fakes`). Services never depend on it; the CLI and the tests do."""

from zhongshu.devstack.nats import NatsServer
from zhongshu.devstack.postgres import PostgresServer
from zhongshu.devstack.process import Server, StackError, free_port
from zhongshu.devstack.redis import RedisServer
from zhongshu.devstack.stack import NATS_URL_ENV, POSTGRES_URL_ENV, REDIS_URL_ENV, EmbeddedStack

__all__ = [
    "NATS_URL_ENV",
    "POSTGRES_URL_ENV",
    "REDIS_URL_ENV",
    "EmbeddedStack",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "Server",
    "StackError",
    "free_port",
]
