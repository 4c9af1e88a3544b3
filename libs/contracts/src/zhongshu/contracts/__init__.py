"""zhongshu-contracts: everything zhongshu puts on the wire, and nothing else.

`envelope` (CloudEvents 1.0 envelope and codec), `events` (the event types), `subjects` (subject
builders and filters), `streams` (streams and KV buckets), `headers` (NATS header names), `ids`
(message ids), `examples` (one instance of every event), `schema` (JSON Schema and AsyncAPI
generation: `python -m zhongshu.runtime.topology --write docs`, from the services' declarations).
"""
