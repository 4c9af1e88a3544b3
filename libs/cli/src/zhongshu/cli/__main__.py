"""``python -m zhongshu.cli``: how ``zhongshu up`` starts each service as a child process."""

from zhongshu.cli.main import app

app(prog_name="zhongshu")
