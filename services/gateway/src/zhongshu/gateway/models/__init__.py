"""The API's request and response shapes (they generate the OpenAPI document)."""
