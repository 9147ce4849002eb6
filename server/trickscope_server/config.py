"""Server settings: one object, from ``TRICKSCOPE_*`` environment variables or keyword arguments."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import orjson
import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trickscope_wire import limits as wire


def default_database_url() -> str:
    """A SQLite file under the user's data directory (created if missing): zero set-up."""
    data_dir = Path(platformdirs.user_data_dir("trickscope"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'trickscope.db'}"


def default_web_dir() -> Path:
    """The dashboard shipped in the wheel, else the checkout's ``web/`` (editable installs)."""
    packaged = Path(str(resources.files("trickscope_server").joinpath("web")))
    if (packaged / "index.html").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "web"


class Settings(BaseSettings):
    """Everything the server can be configured with; CLI flags pass the same names as kwargs."""

    model_config = SettingsConfigDict(env_prefix="TRICKSCOPE_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    web_dir: Path = Field(default_factory=default_web_dir)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Input limits checked before anything is stored (422 naming the field past any of them).
    # Defaults shared with the agent (trickscope_wire.limits); names are capped by their columns.
    max_json_depth: int = Field(default=wire.MAX_JSON_DEPTH, ge=1, le=60)  # config, setup, ...
    max_config_bytes: int = Field(default=wire.MAX_DOCUMENT_BYTES, gt=0)  # config and system
    max_tags: int = Field(default=wire.MAX_TAGS, ge=0)
    max_tag_chars: int = Field(default=wire.MAX_TAG_CHARS, ge=1)
    max_name_chars: int = Field(default=wire.MAX_NAME_CHARS, ge=1, le=256)  # project, run name
    max_series_name_chars: int = Field(default=wire.MAX_SERIES_NAME_CHARS, ge=1, le=512)
    max_layers: int = Field(default=wire.MAX_LAYERS, ge=0)
    max_batch_points: int = Field(default=5_000_000, gt=0)
    default_points: int = Field(default=2000, ge=3)
    max_points: int = Field(default=100_000, ge=3)
    migrate_on_start: bool = True
    # Server processes sharing the port (``serve --workers``); more than one needs PostgreSQL.
    workers: int = Field(default=1, ge=1, le=64)
    sse_poll_seconds: float = Field(default=1.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    # A live stream re-diagnoses its run at most this often, and only after new data arrived.
    sse_health_seconds: float = Field(default=3.0, gt=0)
    # The longest an agent's wait for a live follower (``GET /runs/{id}/followed?wait=``) is
    # held. A long wait sends a space every follow_keepalive_seconds (at most a third of the
    # liveness grace): keep that under the idle timeout of a proxy in front of the server.
    follow_wait_seconds: float = Field(default=600.0, gt=0, le=3600)
    follow_keepalive_seconds: float = Field(default=40.0, gt=0)
    # A ``running`` run with no request for this long reads as ``crashed`` (the agent sends a
    # heartbeat every 30 s when idle, so the default tolerates three missed ones and a slow step).
    liveness_grace_seconds: float = Field(default=120.0, gt=0)
    # Authentication (see security/): a write token from the environment, besides the tokens
    # created with `trickscope token create`; any token at all turns authentication on.
    token: SecretStr | None = None
    # Serve on a non-loopback interface without any token (refused otherwise).
    insecure: bool = False
    # Host names (besides loopback names, IP literals and the bind host) that requests may carry
    # in their Host header; "*" accepts any. Comma-separated or a JSON list in the environment.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Key of the dashboard's session cookies; random per process when unset (sessions then end
    # with the process). Set it when several server processes share one database.
    session_secret: SecretStr | None = None
    session_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # How long the server trusts its copy of the tokens table: a revoked or new token takes
    # effect within this many seconds, and requests pay no database query meanwhile.
    token_cache_seconds: float = Field(default=2.0, gt=0, le=60)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def env_token(self) -> str | None:
        """The ``TRICKSCOPE_TOKEN`` secret, or None when unset or empty."""
        secret = self.token.get_secret_value() if self.token is not None else ""
        return secret or None
