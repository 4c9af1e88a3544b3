pytest_plugins = ["zhongshu.devstack.testing"]
