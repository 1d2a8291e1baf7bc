"""A stand-in for a third-party HTTP API (a price service), so the example needs no network.

A tiny ``http.server`` on a free loopback port, served by a daemon thread of this process and
started when Django is set up (``ShopConfig.ready``).  It answers ``GET /prices`` after 20 ms,
like a fast remote service.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler

PRICES = {"currency": "EUR", "rates": {"EUR": 1.0, "USD": 1.08}}

_server: _Server | None = None
_lock = threading.Lock()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.02)  # a worker thread of the stand-in service, not the event loop
        body = json.dumps(PRICES).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the server output to what the guard says


def start() -> None:
    """Start the service once per process (a plain TCPServer: no reverse DNS at start-up)."""
    global _server
    with _lock:
        if _server is None:
            _server = _Server(("127.0.0.1", 0), _Handler)
            threading.Thread(target=_server.serve_forever, name="upstream", daemon=True).start()


def url(path: str = "/") -> str:
    """The service's URL for ``path`` (``http://127.0.0.1:<port>/prices``)."""
    start()
    assert _server is not None
    host, port = _server.server_address[:2]
    return f"http://{host}:{port}{path}"
