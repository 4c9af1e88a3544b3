"""zhongshu-watchdog: raises the hub's alerts (resources, services down, security events) and
keeps every alert's lifecycle (raised, acknowledged, silenced, resolved)."""
