"""What operators see: OpenTelemetry tracing (``telemetry``), Prometheus metrics (``metrics``),
JSON logs (``logs``) and the health and readiness probes (``health``). Imports nothing else of
``consumer``'s at run time."""

__all__ = ["health", "logs", "metrics", "telemetry"]
