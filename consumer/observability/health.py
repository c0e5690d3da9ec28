"""Kubernetes probes and Prometheus metrics on a small HTTP server: ``/healthz`` (liveness: the
poll loop is turning), ``/readyz`` (readiness: connected, no fatal error, dead-letter breaker
closed) and ``/metrics``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["HealthServer"]

STALL_S = 30.0  # a poll loop silent for this long is wedged


class HealthServer:
    def __init__(self, port: int, ready: Callable[[], str | None], host: str = "0.0.0.0") -> None:  # noqa: S104
        """``ready`` returns None when ready, else why not."""
        self.last_poll = time.monotonic()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    stalled = time.monotonic() - health.last_poll > STALL_S
                    self._answer(503 if stalled else 200, "poll loop stalled" if stalled else "ok")
                elif self.path == "/readyz":
                    problem = ready()
                    self._answer(503 if problem else 200, problem or "ready")
                elif self.path == "/metrics":
                    self._answer(200, generate_latest().decode(), CONTENT_TYPE_LATEST)
                else:
                    self._answer(404, "not found")

            def _answer(self, code: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
                body = text.encode() if text.endswith("\n") else f"{text}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would drown the log."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self.last_poll = time.monotonic()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
