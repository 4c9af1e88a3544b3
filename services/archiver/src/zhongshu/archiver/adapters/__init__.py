"""I/O behind small interfaces: object storage, the archive state in NATS KV, batch pulls."""
