"""Agent settings: one frozen object built from ``init`` kwargs, falling back to the environment.

Each field ``<field>`` reads ``TRICKSCOPE_<FIELD>`` when the caller leaves it ``None``. The
environment is read once, in :meth:`AgentConfig.from_env`, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
# The default wait of a logged point while nobody follows the run live: this many times
# flush_secs, at most UNFOLLOWED_FLUSH_MAX seconds.
UNFOLLOWED_FLUSHES = 600
UNFOLLOWED_FLUSH_MAX = 300.0
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _default_journal_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "trickscope" / "journal"


def parse_bool(variable: str, text: str) -> bool:
    """Parse a boolean setting; only ``1/true/yes`` and ``0/false/no`` are accepted."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(
        f"{variable}={text!r} is not a boolean; use one of {', '.join(_TRUE + _FALSE)}"
    )


def _parse_number(variable: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a valid {kind.__name__}") from None
    return value


SCRATCH_BYTES_VARIABLE = "TRICKSCOPE_SCRATCH_BYTES"
DEFAULT_SCRATCH_BYTES = 32 * 2**20
# On a GPU the scratch buffer takes at most this share of the device's memory.
SCRATCH_DEVICE_SHARE = 1 / 256


def scratch_bytes(device: Any, environ: Mapping[str, str] | None = None) -> int:
    """Size of ``watch``'s scratch buffer per device (float32 copies of a block of tensors, for
    histograms and the statistics of tensors that cannot be read in place).

    ``TRICKSCOPE_SCRATCH_BYTES`` where set, else :data:`DEFAULT_SCRATCH_BYTES` (32 MiB), and on
    a CUDA device at most :data:`SCRATCH_DEVICE_SHARE` of its memory (16 MiB on a 4 GB GPU).
    Read when ``watch`` lays out a model, not at import.
    """
    env = os.environ if environ is None else environ
    text = env.get(SCRATCH_BYTES_VARIABLE, "")
    if text:
        value = int(_parse_number(SCRATCH_BYTES_VARIABLE, text, int))
        if value <= 0:
            raise ValueError(f"{SCRATCH_BYTES_VARIABLE}={text!r} must be a positive integer")
        return value
    limit = DEFAULT_SCRATCH_BYTES
    if getattr(device, "type", None) == "cuda":
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        limit = min(limit, int(total * SCRATCH_DEVICE_SHARE))
    return limit


def _check_url(variable: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable}={url!r} is not a server URL; expected e.g. {DEFAULT_URL!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class AgentConfig:
    """How the agent talks to the server and how much it may buffer.

    Attributes:
        url: Base URL of the trickscope server (``TRICKSCOPE_URL``).
        disabled: Make every call a no-op (``TRICKSCOPE_DISABLED``).
        offline: Never touch the network; write everything to the journal for
            ``trickscope sync`` (``TRICKSCOPE_OFFLINE``).
        quiet: Do not log the run's URL when it starts (``TRICKSCOPE_QUIET``).
        journal_dir: Where unsent requests spill (``TRICKSCOPE_JOURNAL_DIR``).
        flush_secs: Longest time a logged point (``log``, the learning rate) waits before it is
            sent while someone follows the run live (a dashboard or a client's stream): what
            the live charts' latency is made of.
        unfollowed_flush_secs: The same while nobody follows the run live, as each point
            batch's answer says; never shorter than ``flush_secs``. By default 600 times
            ``flush_secs``, at most 300 s: 5 minutes at the default 0.5 s, and a script that
            asked for a short ``flush_secs`` keeps a shorter wait. Fewer, larger requests cost
            the server, and a laptop's shared cores, less: on a CPU, whose ViT-tiny step takes
            ~1.2 s, a request a minute cost the server 0.17-0.18 ms per step, at the edge of its
            0.2 ms budget, and one per five minutes 0.10-0.16 ms.
            Nobody sees the points meanwhile without asking for them: the agent holds a request
            the server answers when a stream opens on the run (or a REST read of its data),
            which brings the fast cadence back at once, or when the runs list shows the run,
            which has the agent send what it holds; and it copies what it holds to a file in
            ``journal_dir`` every ``flush_secs``, which the next run or ``trickscope sync``
            sends if the process is killed (:mod:`trickscope.held`).
        stats_flush_secs: Longest time a per-layer statistic or histogram from ``watch`` waits
            while someone follows the run live; while nobody does, they wait as long
            as the logged points.
            They come in the thousands per step, and the server's work grows with the number of
            series per request far more than with their points: sending them in larger, rarer
            batches keeps that work off a CPU the training shares.
        max_buffer_bytes: Cap on unsent data held in memory; the rest spills to the journal.
        log_buffer_bytes: Memory for logged points (``log``, the tricks' reports, the learning
            rate) that the sender thread has not taken yet, 24 bytes a point; past it they
            spill to a file in ``journal_dir``. Logged points are never dropped.
        queue_size: ``watch``'s per-layer statistics and histograms waiting for the sender
            thread; more are thinned (skipped) and counted as ``agent/thinned_samples``.
        http_timeout: Socket timeout of one request, in seconds.
        finish_timeout: How long ``finish`` (and exit) waits for the server; what it has not
            taken by then stays in the journal for ``trickscope sync``.
        token: Sent as ``Authorization: Bearer <token>`` on every request
            (``TRICKSCOPE_TOKEN``); ``None`` for a server that runs open.
        heartbeat_secs: A run that sent nothing else for this long sends a heartbeat, so the
            server can tell a quiet run from a dead one; none goes while a wait for a live
            follower is held, which the server stamps as the run's heartbeat.
        dead_letter_after: Attempts after which a request the server keeps failing with 500 is
            set aside in ``<run id>.dead.jsonl`` (a request it refuses, 4xx, at once), so it
            cannot hold up the run's other data.
        compress: gzip request bodies over 4 KiB (``TRICKSCOPE_COMPRESS``). By default only
            for a server that is not on this machine: on loopback compressing costs both sides
            CPU and saves nothing. Set it for a remote server reached through a local tunnel.
    """

    url: str = DEFAULT_URL
    disabled: bool = False
    offline: bool = False
    quiet: bool = False
    journal_dir: Path = Path(".")
    flush_secs: float = 0.5
    unfollowed_flush_secs: float | None = None
    stats_flush_secs: float = 5.0
    max_buffer_bytes: int = 64 * 2**20
    log_buffer_bytes: int = 16 * 2**20
    queue_size: int = 1024
    http_timeout: float = 10.0
    finish_timeout: float = 10.0
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs
    heartbeat_secs: float = 30.0
    dead_letter_after: int = 5
    compress: bool | None = None

    def __post_init__(self) -> None:
        _check_url("url", self.url)
        for name in ("disabled", "offline", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.compress is not None and not isinstance(self.compress, bool):
            raise TypeError(f"compress={self.compress!r} must be True, False or None")
        positive = {
            "flush_secs": self.flush_secs,
            "stats_flush_secs": self.stats_flush_secs,
            "max_buffer_bytes": self.max_buffer_bytes,
            "log_buffer_bytes": self.log_buffer_bytes,
            "queue_size": self.queue_size,
            "http_timeout": self.http_timeout,
            "heartbeat_secs": self.heartbeat_secs,
            "dead_letter_after": self.dead_letter_after,
        }
        if self.unfollowed_flush_secs is not None:  # None: the default, from flush_secs
            positive["unfollowed_flush_secs"] = self.unfollowed_flush_secs
        for name, value in positive.items():
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}={value!r} must be a positive number")
        if isinstance(self.finish_timeout, bool) or not self.finish_timeout >= 0:
            raise ValueError(f"finish_timeout={self.finish_timeout!r} must be >= 0")
        if self.token is not None and (
            not isinstance(self.token, str) or not self.token.strip() or "\n" in self.token
        ):
            raise ValueError("token must be a non-empty string on one line (or None)")

    @property
    def unfollowed_interval(self) -> float:
        """Seconds between flushes of logged points while nobody follows the run live."""
        if self.unfollowed_flush_secs is None:
            return max(
                self.flush_secs, min(UNFOLLOWED_FLUSHES * self.flush_secs, UNFOLLOWED_FLUSH_MAX)
            )
        return max(self.flush_secs, self.unfollowed_flush_secs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AgentConfig:
        """Build from keyword overrides, then ``TRICKSCOPE_*`` variables, then defaults.

        Raises:
            ValueError: a variable or override does not parse; the message names it.
            TypeError: an override is not a field of :class:`AgentConfig`.
        """
        env = os.environ if environ is None else environ
        fields = cls.__dataclass_fields__
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise TypeError(f"unknown agent setting(s) {unknown}; accepted: {sorted(fields)}")
        values: dict[str, Any] = {}
        for name in fields:
            given = overrides.get(name)
            if given is not None:
                values[name] = given
                continue
            variable = f"TRICKSCOPE_{name.upper()}"
            text = env.get(variable)
            if text is None or text == "":
                continue
            values[name] = _from_text(name, variable, text)
        if "url" in values:
            values["url"] = _check_url("url", str(values["url"]))
        values["journal_dir"] = Path(values.get("journal_dir") or _default_journal_dir())
        return cls(**values)


def _from_text(name: str, variable: str, text: str) -> Any:
    if name in ("disabled", "offline", "quiet", "compress"):
        return parse_bool(variable, text)
    if name in ("max_buffer_bytes", "log_buffer_bytes", "queue_size", "dead_letter_after"):
        return _parse_number(variable, text, int)
    if name in (
        "flush_secs",
        "unfollowed_flush_secs",
        "stats_flush_secs",
        "http_timeout",
        "finish_timeout",
        "heartbeat_secs",
    ):
        return _parse_number(variable, text, float)
    if name == "url":
        return _check_url(variable, text)
    return text
