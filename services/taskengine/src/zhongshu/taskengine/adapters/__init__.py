"""The engine's I/O: run histories and step requests on WORKFLOWS, definitions in the
`workflows` bucket, triggers watched in the `triggers` bucket."""
