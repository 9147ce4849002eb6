"""A real HTTP/1.1 proxy process in front of a real server that refuses and fails requests.

    python -m tests.integration.refusing_proxy --upstream http://127.0.0.1:PORT --port PORT

Every request is forwarded to ``--upstream`` unless the proxy was told otherwise through its own
paths: ``PUT /_proxy/plan`` with a JSON list of statuses answers the next point batches with
them, one each, instead of forwarding; ``PUT /_proxy/outage`` with ``{"status": 503}`` answers
every request with that status until ``{"status": null}``. ``GET /_proxy/log`` lists each request
as ``[method, path, batch_id, status, forwarded]``. Answers it makes itself are problem documents
(RFC 9457), as the server's own are.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import sys
import threading
from collections import deque
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class State:
    """The plan, the outage and the log, shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plan: deque[int] = deque()
        self.outage: int | None = None
        self.log: list[list[object]] = []

    def answer_for(self, method: str, path: str) -> int | None:
        """The status to answer instead of forwarding, or None."""
        with self.lock:
            if self.outage is not None:
                return self.outage
            if method == "POST" and path.endswith("/points") and self.plan:
                return self.plan.popleft()
            return None


def _batch_id(headers: Message, body: bytes) -> str | None:
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    try:
        found = json.loads(body).get("batch_id") if body else None
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def make_handler(state: State, upstream: str) -> type[BaseHTTPRequestHandler]:
    host, port = urlsplit(upstream).hostname or "127.0.0.1", urlsplit(upstream).port

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the agent expects

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _control(self, body: bytes) -> None:
            with state.lock:
                if self.path == "/_proxy/plan":
                    state.plan.extend(json.loads(body))
                elif self.path == "/_proxy/outage":
                    state.outage = json.loads(body)["status"]
                answer = json.dumps(state.log).encode()
            self._send(200, answer, "application/json")

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.startswith("/_proxy/"):
                self._control(body)
                return
            batch = _batch_id(self.headers, body) if self.path.endswith("/points") else None
            status = state.answer_for(self.command, self.path)
            if status is not None:
                problem = {"type": "about:blank", "title": "refused by the proxy",
                           "status": status, "detail": f"the proxy answered {status}"}  # fmt: skip
                with state.lock:
                    state.log.append([self.command, self.path, batch, status, False])
                self._send(status, json.dumps(problem).encode(), "application/problem+json")
                return
            keep = ("Content-Type", "Content-Encoding", "Authorization", "Accept")
            headers = {k: v for k in keep if (v := self.headers.get(k)) is not None}
            upstream_conn = http.client.HTTPConnection(host, port, timeout=30)
            try:
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                answer = response.read()
            finally:
                upstream_conn.close()
            with state.lock:
                state.log.append([self.command, self.path, batch, response.status, True])
            content_type = response.getheader("Content-Type") or "application/json"
            self._send(response.status, answer, content_type)

        do_GET = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815 - http.server's names

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(State(), args.upstream))
    server.daemon_threads = True
    sys.stdout.write("ready\n")  # the test waits for this line
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
