"""Fixtures for the agent's unit tests: a real HTTP peer that records requests, and helpers."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from trickscope_wire import decode_f64, decode_i64


@dataclass
class Captured:
    """Requests received by :class:`CaptureServer`, bodies decoded from JSON."""

    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # one per request
    gzipped: int = 0
    # The status to answer each request with (default 200); answers >= 400 are not recorded.
    status: Callable[[str, str, dict[str, Any]], int] = lambda method, path, body: 200
    answer: bytes = b"{}"  # the body of every success answer
    # Answers a GET (the agent's wait for a live follower), with 200 or the status it gives,
    # and may block as the server holds it; None: GET is answered 404.
    on_get: Callable[[str], bytes | tuple[int, bytes]] | None = None
    gets: list[str] = field(default_factory=list)  # the paths of the GETs received
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            return list(self.requests)

    def points(self) -> dict[str, dict[int, float]]:
        """Every point received, ``{series: {step: value}}`` (later batches win)."""
        out: dict[str, dict[int, float]] = {}
        for method, path, body in self.snapshot():
            if method == "POST" and path.endswith("/points"):
                for series in body["series"]:
                    steps = decode_i64(series["steps"])
                    values = decode_f64(series["values"])
                    out.setdefault(series["name"], {}).update(zip(steps, values, strict=True))
                # watch's statistics arrive as blocks: one column of every layer's values
                # over shared steps, layer by layer.
                for block in body.get("blocks", []):
                    steps = decode_i64(block["steps"])
                    values = decode_f64(block["values"])
                    for i, layer in enumerate(block["layers"]):
                        row = values[i * len(steps) : (i + 1) * len(steps)]
                        name = f"{block['family']}/{layer}"
                        out.setdefault(name, {}).update(zip(steps, row, strict=True))
        return out

    def histograms(self) -> dict[str, dict[int, tuple[float, float, float, list[float]]]]:
        """Every histogram received, ``{name: {step: (lo, hi, nonfinite, counts)}}``."""
        out: dict[str, dict[int, tuple[float, float, float, list[float]]]] = {}
        for method, path, body in self.snapshot():
            if method == "POST" and path.endswith("/points"):
                for hist in body.get("histograms", []):
                    bins = hist["bins"]
                    steps = decode_i64(hist["steps"])
                    lo, hi = decode_f64(hist["lo"]), decode_f64(hist["hi"])
                    nonfinite, counts = decode_f64(hist["nonfinite"]), decode_f64(hist["counts"])
                    series = out.setdefault(hist["name"], {})
                    for i, step in enumerate(steps):
                        row = list(counts[i * bins : (i + 1) * bins])
                        series[step] = (lo[i], hi[i], nonfinite[i], row)
                # watch's histograms of a flush arrive as blocks: (layer, step) row-major.
                for block in body.get("histogram_blocks", []):
                    bins, steps = block["bins"], decode_i64(block["steps"])
                    lo, hi = decode_f64(block["lo"]), decode_f64(block["hi"])
                    nonfinite, counts = decode_f64(block["nonfinite"]), decode_f64(block["counts"])
                    for row, layer in enumerate(block["layers"]):
                        series = out.setdefault(f"{block['family']}/{layer}", {})
                        for j, step in enumerate(steps):
                            at = row * len(steps) + j
                            cells = list(counts[at * bins : (at + 1) * bins])
                            series[step] = (lo[at], hi[at], nonfinite[at], cells)
        return out


class CaptureServer:
    """A stdlib HTTP/1.1 server in a thread answering 200 ``{}`` to every PUT and POST (or what
    ``captured.status`` says)."""

    def __init__(self) -> None:
        captured = self.captured = Captured()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the agent expects

            def _record(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                    captured.gzipped += 1
                body = json.loads(raw)
                status = captured.status(self.command, self.path, body)
                if status < 400:
                    with captured.lock:
                        captured.requests.append((self.command, self.path, body))
                        captured.headers.append(dict(self.headers.items()))
                answer = captured.answer if status < 400 else b'{"detail": "refused by the test"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_POST = _record

            def do_GET(self) -> None:
                captured.gets.append(self.path)
                on_get = captured.on_get
                unknown = (404, b'{"detail": "no such route"}')
                answer = unknown if on_get is None else on_get(self.path)
                status, answer = answer if isinstance(answer, tuple) else (200, answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.close()


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """Poll a predicate until true, failing after ``timeout`` seconds (default 10)."""
    return _wait_for


@pytest.fixture
def settings(tmp_path: Any) -> dict[str, Any]:
    """Agent settings isolated from the environment: journal under ``tmp_path``, fast flush."""
    return {"journal_dir": tmp_path / "journal", "flush_secs": 0.05, "finish_timeout": 5.0}
