"""Servers the benchmarks start side by side: trickscope and an MLflow tracking server."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _wait(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def start_trickscope(database_url: str, *extra_args: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trickscope_cli",
            "serve",
            "--db",
            database_url,
            "--port",
            str(port),
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/healthz", process, 30)
    return Server("trickscope", url, process)


def mlflow_executable() -> str | None:
    """MLflow from MLFLOW_BIN, PATH, or a neighbouring venv (its pins clash with ours)."""
    for candidate in (
        os.environ.get("MLFLOW_BIN"),
        shutil.which("mlflow"),
        "/work/mlflow-venv/bin/mlflow",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def start_mlflow(backend_uri: str, artifacts: Path) -> Server:
    executable = mlflow_executable()
    if executable is None:
        raise RuntimeError("mlflow not found: set MLFLOW_BIN or pip install mlflow in another venv")
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "server",
            "--backend-store-uri",
            backend_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-artifact-root",
            str(artifacts),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/health", process, 120)
    return Server("mlflow", url, process)


class Client:
    """One keep-alive HTTP/1.1 connection, as the agent and MLflow's client use."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=300)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        self.connection.request(
            method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data

    def json(self, method: str, path: str, payload: object) -> dict:
        return json.loads(self.request(method, path, json.dumps(payload).encode()) or b"{}")
