"""The API's operations, one module per resource; each handler checks scope, calls one adapter
or the task desk, and maps the result to the API's models."""
