"""Property-based fuzzing of the whole REST API (schemathesis over the app's OpenAPI schema).

Every operation gets generated requests, valid ones (positive) and ones that break the schema
(negative); each request naming a run is also sent for a run that exists and holds points,
layers and histograms, so the reads past the 404 are exercised too. The one property checked is
the server's: no answer is a 5xx and no live stream breaks after its headers. Generation is
derandomized, so a run is reproducible from its example count alone.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from trickscope_wire import (
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    dumps,
    encode_f64,
    encode_i64,
)

SEEDED_RUN = "fuzz-seeded"
# The fuzzed server's settings: live streams answer quickly, so a fuzzed stream is checked past
# its headers at once, and a fuzzed wait for a follower is held a moment, not up to a minute.
SERVER_ENV = {
    "TRICKSCOPE_SSE_KEEPALIVE_SECONDS": "0.2",
    "TRICKSCOPE_SSE_POLL_SECONDS": "0.1",
    "TRICKSCOPE_FOLLOW_WAIT_SECONDS": "0.02",
}
JSON = {"Content-Type": "application/json"}


@dataclass
class FuzzReport:
    """What a fuzzing run sent and what came back."""

    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status, plus live streams that broke after their headers."""
        return len(self.failures)


def seed_run(base_url: str, session: requests.Session) -> None:
    """A run with layers, scalar and per-layer series, a NaN, and histograms."""
    put = session.put(
        f"{base_url}/api/v1/runs/{SEEDED_RUN}",
        json={"project": "fuzz", "name": "seeded", "config": {"lr": 0.1, "opt": {"b": [1, 2]}}},
    )
    put.raise_for_status()
    session.put(
        f"{base_url}/api/v1/runs/{SEEDED_RUN}/layers", json={"layers": ["l0", "l1"]}
    ).raise_for_status()
    steps = list(range(1, 51))
    values = [1.0 / s for s in steps]
    values[10] = float("nan")
    batch = PointBatch(
        batch_id="seed",
        series=[
            SeriesColumns(
                name=name,
                steps=encode_i64(steps),
                values=encode_f64(values),
                times=encode_f64([float(s) for s in steps]),
            )
            for name in ("loss", "grad_norm/l0", "grad_norm/l1")
        ],
        histograms=[
            HistogramColumns(
                name="grad_hist/l0",
                bins=2,
                steps=encode_i64([1, 2]),
                lo=encode_f64([0.0, 0.0]),
                hi=encode_f64([1.0, 1.0]),
                counts=encode_f64([1.0, 2.0, 3.0, 4.0]),
                nonfinite=encode_f64([0.0, 1.0]),
                times=encode_f64([1.0, 2.0]),
            )
        ],
    )
    session.post(
        f"{base_url}/api/v1/runs/{SEEDED_RUN}/points", data=dumps(batch), headers=JSON
    ).raise_for_status()


def _variants(case: Any) -> list[dict[str, Any]]:
    """Path parameters to send the case with: as generated, and for the seeded run."""
    variants = [dict(case.path_parameters or {})]
    if "run_id" in variants[0] and case.method.upper() != "DELETE":
        variants.append({**variants[0], "run_id": SEEDED_RUN})
    return variants


def _send(case: Any, base_url: str, session: requests.Session, report: FuzzReport) -> None:
    where = f"{case.method.upper()} {case.operation.path}"
    kwargs = case.as_transport_kwargs(base_url=base_url)
    kwargs.update(timeout=15, stream=True, allow_redirects=False)
    report.cases += 1
    try:
        response = session.request(**kwargs)
    except requests.RequestException as exc:
        report.failures.append(f"{where}: no answer ({exc!r:.200})")
        return
    report.statuses[response.status_code] += 1
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # A live stream: its first message must arrive intact (one once died after headers).
            next(response.iter_content(chunk_size=None), b"")
        else:
            _ = response.content
    except requests.RequestException as exc:
        report.failures.append(f"{where}: body broke after {response.status_code} ({exc!r:.200})")
    finally:
        response.close()
    if response.status_code >= 500:
        report.failures.append(f"{where} -> {response.status_code}: {case.as_curl_command()[:400]}")


def fuzz_api(
    base_url: str, openapi: dict[str, Any], *, max_examples: int, seed_data: bool = True
) -> FuzzReport:
    """Fuzz every operation of ``openapi`` against the server at ``base_url``."""
    report = FuzzReport()
    started = time.monotonic()
    schema = schemathesis.openapi.from_dict(openapi)
    with requests.Session() as session:
        if seed_data:
            seed_run(base_url, session)
        for result in schema.get_all_operations():
            operation = result.ok()
            report.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)

                @settings(
                    max_examples=max_examples,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def run(case: Any) -> None:
                    for path_parameters in _variants(case):
                        case.path_parameters = path_parameters
                        _send(case, base_url, session, report)

                try:
                    run()
                except Unsatisfiable:
                    pass  # no request can break this operation's schema (e.g. no parameters)
    report.seconds = time.monotonic() - started
    return report
