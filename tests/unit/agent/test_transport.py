"""The keep-alive connection survives a server that closes idle connections; bodies are
compressed only where a network lies between the agent and the server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from trickscope.transport import Connection, Unavailable


class OneRequestPerConnection(http.server.BaseHTTPRequestHandler):
    """Answers HTTP/1.1 without ``Connection: close``, then drops the socket anyway, as a
    server's keep-alive timeout does between two requests."""

    protocol_version = "HTTP/1.1"
    served: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[str]:
    OneRequestPerConnection.served = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OneRequestPerConnection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_connection_closed_while_idle_is_reopened_without_an_error(closing_server: str) -> None:
    connection = Connection(closing_server, timeout=5)
    try:
        for i in range(5):
            assert connection.send("POST", f"/r{i}", b"{}") == 200
    finally:
        connection.close()
    assert OneRequestPerConnection.served == [f"/r{i}" for i in range(5)]


def test_a_server_that_is_down_is_still_reported() -> None:
    connection = Connection("http://127.0.0.1:9", timeout=1)
    with pytest.raises(Unavailable):
        connection.send("POST", "/x", b"{}")


def test_bodies_are_compressed_by_default_only_to_a_server_off_this_machine() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        assert not Connection(url, timeout=1.0).compress
        assert Connection(url, timeout=1.0, compress=True).compress
    assert Connection("http://trickscope.internal:8000", timeout=1.0).compress
    assert not Connection("http://trickscope.internal:8000", timeout=1.0, compress=False).compress
