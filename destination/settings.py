"""Settings: read from the environment at start-up, overridden by flags.

A bad value stops start-up with a ``SettingsError`` that names the setting.
Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from destination.errors import SettingsError

Role = Literal["serve", "worker", "tool"]

DAY = 24 * 3600.0
DEFAULT_DATABASE_URL = "sqlite:///data/destination.db"
DEFAULT_DRY_RUN_DATABASE_URL = "sqlite:///data/destination-dry-run.db"
LOCAL_SECRET_FILE = Path("data/shared-secret")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to start; see the README's settings table."""

    port: int = 8080
    host: str = "0.0.0.0"  # noqa: S104 - a webhook receiver must be reachable
    database_url: str = DEFAULT_DATABASE_URL
    mappings_dir: Path = Path("mappings")
    source_id: str = "default"
    shared_secrets: tuple[str, ...] = ()
    token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_events: int = 5000
    courier_base_url: str = "https://api.courier.com"
    courier_auth_token: str | None = None
    allow_unsigned: bool = False
    dry_run: bool = False
    # Delivery tuning. Every delay is a setting so tests can run in milliseconds.
    read_timeout: float = 30.0
    send_timeout: float = 10.0
    connect_timeout: float = 5.0
    send_concurrency: int = 10
    retry_base: float = 1.0
    retry_cap: float = 600.0
    give_up_after: float = 24 * 3600.0
    poll_interval: float = 1.0
    lease_seconds: float = 60.0
    shutdown_timeout: float = 10.0
    store_busy_timeout: float = 5.0
    repeat_limit: int = 3
    send_rate: float | None = None
    max_outbox: int = 100_000
    breaker_threshold: int = 20
    breaker_cooldown: float = 30.0
    # Retention: keys live at Courier for key_ttl; our pair records for
    # record_retention; payloads and finished outbox rows for payload_retention.
    key_ttl: float = 7 * DAY
    record_retention: float = 400 * DAY
    payload_retention: float = 7 * DAY
    purge_interval: float = 3600.0
    accept_expired: bool = False
    run_worker: bool = True
    migrate: bool = False
    capture_dir: Path | None = None
    capture_max_bytes: int = 64 * 1024 * 1024
    capture_interval: float = 1.0


# (environment variable, field, parser) for every setting read from the environment.
def _parse_port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a TCP port")
    return port


def _parse_positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{number} is not a positive whole number")
    return number


def _parse_seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{value!r} is not a positive number of seconds")
    return seconds


def _parse_rate(value: str) -> float | None:
    rate = float(value)
    if rate == 0:
        return None  # 0 means no rate limit
    if not 0 < rate < float("inf"):
        raise ValueError(f"{value!r} is not a positive number of requests a second")
    return rate


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _parse_secrets(value: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in value.split(",") if part.strip())
    if not found:
        raise ValueError("it holds no secret")
    return found


def _parse_text(value: str) -> str:
    if not value.strip():
        raise ValueError("it is empty")
    return value.strip()


def _parse_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


_ENVIRONMENT: tuple[tuple[str, str, Any], ...] = (
    ("PORT", "port", _parse_port),
    ("DATABASE_URL", "database_url", _parse_text),
    ("DESTINATION_MAPPINGS", "mappings_dir", lambda v: Path(_parse_text(v))),
    ("DESTINATION_SOURCE_ID", "source_id", _parse_text),
    ("DESTINATION_SHARED_SECRET", "shared_secrets", _parse_secrets),
    ("DESTINATION_TOKEN", "token", _parse_text),
    ("DESTINATION_MAX_BODY_BYTES", "max_body_bytes", _parse_positive_int),
    ("DESTINATION_MAX_EVENTS", "max_events", _parse_positive_int),
    ("COURIER_BASE_URL", "courier_base_url", _parse_url),
    ("COURIER_AUTH_TOKEN", "courier_auth_token", _parse_text),
    ("DESTINATION_READ_TIMEOUT", "read_timeout", _parse_seconds),
    ("DESTINATION_SEND_TIMEOUT", "send_timeout", _parse_seconds),
    ("DESTINATION_SEND_CONCURRENCY", "send_concurrency", _parse_positive_int),
    ("DESTINATION_RETRY_BASE", "retry_base", _parse_seconds),
    ("DESTINATION_RETRY_CAP", "retry_cap", _parse_seconds),
    ("DESTINATION_GIVE_UP_AFTER", "give_up_after", _parse_seconds),
    ("DESTINATION_POLL_INTERVAL", "poll_interval", _parse_seconds),
    ("DESTINATION_LEASE_SECONDS", "lease_seconds", _parse_seconds),
    ("DESTINATION_REPEAT_LIMIT", "repeat_limit", _parse_positive_int),
    ("DESTINATION_SEND_RATE", "send_rate", _parse_rate),
    ("DESTINATION_MAX_OUTBOX", "max_outbox", _parse_positive_int),
    ("DESTINATION_BREAKER_THRESHOLD", "breaker_threshold", _parse_positive_int),
    ("DESTINATION_BREAKER_COOLDOWN", "breaker_cooldown", _parse_seconds),
    ("DESTINATION_KEY_TTL", "key_ttl", _parse_seconds),
    ("DESTINATION_RECORD_RETENTION", "record_retention", _parse_seconds),
    ("DESTINATION_PAYLOAD_RETENTION", "payload_retention", _parse_seconds),
    ("DESTINATION_PURGE_INTERVAL", "purge_interval", _parse_seconds),
    ("DESTINATION_ACCEPT_EXPIRED", "accept_expired", _parse_bool),
    ("DESTINATION_MIGRATE", "migrate", _parse_bool),
    ("DESTINATION_CAPTURE_DIR", "capture_dir", lambda v: Path(_parse_text(v))),
    ("DESTINATION_CAPTURE_MAX_BYTES", "capture_max_bytes", _parse_positive_int),
    ("DESTINATION_CAPTURE_INTERVAL", "capture_interval", _parse_seconds),
)

ENVIRONMENT_NAMES = tuple(name for name, _, _ in _ENVIRONMENT)


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    role: Role = "serve",
    **overrides: Any,
) -> Settings:
    """Build settings from ``environ`` (default: the process environment).

    ``overrides`` are flag values; ``None`` means the flag was not given.
    ``role`` says what will run: the checks differ (see ``check_settings``).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, field, parse in _ENVIRONMENT:
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as error:
            raise SettingsError(f"{name} has a bad value: {error}.") from None
    values.update({k: v for k, v in overrides.items() if v is not None})

    settings = Settings(**values)
    check_settings(settings, role)
    return settings


def check_settings(settings: Settings, role: Role = "serve") -> None:
    """Refuse combinations that would run the service unsafely or uselessly.

    Only ``serve`` takes events, so only it needs credentials; ``serve`` and
    ``worker`` send, so they need a Courier token or a dry run; ``tool`` (the
    commands that read or fix the store) needs neither.
    """
    if role == "serve" and not (
        settings.shared_secrets or settings.token or settings.allow_unsigned
    ):
        raise SettingsError(
            "DESTINATION_SHARED_SECRET or DESTINATION_TOKEN must be set so that only "
            "your CDP can post events; pass --allow-unsigned to accept anyone."
        )
    if role != "tool" and not settings.courier_auth_token and not settings.dry_run:
        raise SettingsError(
            "COURIER_AUTH_TOKEN is not set; set it, or pass --dry-run to record "
            "requests without sending them."
        )
    if settings.retry_base > settings.retry_cap:
        raise SettingsError(
            f"DESTINATION_RETRY_BASE ({settings.retry_base}) must not exceed "
            f"DESTINATION_RETRY_CAP ({settings.retry_cap})."
        )
    if not DAY <= settings.key_ttl <= 365 * DAY:
        raise SettingsError(
            f"DESTINATION_KEY_TTL ({settings.key_ttl:g} s) must be between one day "
            "and one year: Courier keeps idempotency keys only that long."
        )
    if settings.give_up_after >= settings.key_ttl:
        raise SettingsError(
            f"DESTINATION_GIVE_UP_AFTER ({settings.give_up_after:g} s) must be "
            f"shorter than DESTINATION_KEY_TTL ({settings.key_ttl:g} s), so that no "
            "retry reaches Courier after it forgot the key."
        )
    if settings.record_retention < settings.payload_retention:
        raise SettingsError(
            "DESTINATION_RECORD_RETENTION must be at least "
            "DESTINATION_PAYLOAD_RETENTION: records are what keeps replays deduped."
        )
    if settings.lease_seconds <= settings.send_timeout:
        raise SettingsError(
            f"DESTINATION_LEASE_SECONDS ({settings.lease_seconds}) must exceed "
            f"DESTINATION_SEND_TIMEOUT ({settings.send_timeout}) so that a lease "
            "never expires while its send is still running."
        )


def apply_local_defaults(
    settings_env: Mapping[str, str], secret_file: Path = LOCAL_SECRET_FILE
) -> tuple[dict[str, Any], str | None]:
    """Defaults for ``serve --local``: a generated secret and dry run without a token.

    Returns the flag overrides and, when a secret file was created, the new secret
    so the caller can print it once.
    """
    overrides: dict[str, Any] = {}
    created: str | None = None
    if not settings_env.get("DESTINATION_SHARED_SECRET"):
        secret = ""
        if secret_file.exists():
            secret = secret_file.read_text(encoding="utf-8").strip()
        if not secret:
            # An empty key would make every HMAC forgeable: never use one.
            secret = secrets.token_hex(24)
            _write_private(secret_file, secret + "\n")
            created = secret
        overrides["shared_secrets"] = (secret,)
    if not settings_env.get("COURIER_AUTH_TOKEN"):
        overrides["dry_run"] = True
    return overrides, created


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def with_dry_run_database(settings: Settings) -> Settings:
    """A dry run keeps its records apart from the live store's."""
    if settings.dry_run and settings.database_url == DEFAULT_DATABASE_URL:
        return dataclasses.replace(settings, database_url=DEFAULT_DRY_RUN_DATABASE_URL)
    return settings
