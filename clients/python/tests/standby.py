"""A standby coordinator as the standby protocol describes it, in the test process: every
request is answered with ``307`` to the leader (the same path and query), after ``503``
``no_leader`` answers (``Retry-After: 1``) to the first ``no_leader`` requests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional


class Standby:
    def __init__(self, leader: str, no_leader: int = 0, token: Optional[str] = None) -> None:
        self.leader = leader
        self.no_leader = no_leader
        self.token = token
        self._lock = threading.Lock()
        #: Every request answered, as (method, path with query).
        self.requests: List[Any] = []
        #: Requests that came without ``Authorization: Bearer <token>``.
        self.without_token = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="standby", daemon=True)
        self._thread.start()

    def lead_to(self, leader: str) -> None:
        with self._lock:
            self.leader = leader

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Standby":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _answer(self, method: str, path: str, authorization: Optional[str]) -> "tuple[int, dict[str, str], bytes]":
        with self._lock:
            self.requests.append((method, path))
            if self.token is not None and authorization != f"Bearer {self.token}":
                self.without_token += 1
            if self.no_leader > 0:
                self.no_leader -= 1
                body = {"error": "no_leader", "message": "a takeover is under way"}
                return 503, {"Retry-After": "1"}, json.dumps(body).encode()
            leader = self.leader
        body = {"error": "standby", "message": "this coordinator stands by", "leader": leader}
        return 307, {"Location": f"{leader}{path}"}, json.dumps(body).encode()

    def _handler(self) -> type:
        standby = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                status, headers, body = standby._answer(self.command, self.path, self.headers.get("authorization"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
