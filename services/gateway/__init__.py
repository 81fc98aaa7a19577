"""The HTTP gateway: the desk's read-only JSON API, its OpenAPI document and Prometheus metrics."""
