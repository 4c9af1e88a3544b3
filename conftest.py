pytest_plugins = ["zhongshu.runtime.testing"]
