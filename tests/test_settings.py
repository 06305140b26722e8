"""Tests for destination.settings: environment parsing, flags, start-up checks."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from destination.errors import SettingsError
from destination.settings import (
    DAY,
    DEFAULT_DATABASE_URL,
    DEFAULT_DRY_RUN_DATABASE_URL,
    ENVIRONMENT_NAMES,
    Settings,
    apply_local_defaults,
    check_settings,
    load_settings,
    with_dry_run_database,
)

# The least an environment needs for load_settings to succeed.
MINIMAL = {"DESTINATION_SHARED_SECRET": "whsec-test", "COURIER_AUTH_TOKEN": "ct"}


def load(**environ: str) -> Settings:
    """Settings from MINIMAL plus ``environ``, without touching os.environ."""
    return load_settings({**MINIMAL, **environ})


# defaults


def test_defaults() -> None:
    """Without settings, the documented defaults apply."""
    settings = Settings()

    assert (settings.port, settings.host) == (8080, "0.0.0.0")
    assert settings.database_url == "sqlite:///data/destination.db"
    assert settings.mappings_dir == Path("mappings")
    assert settings.source_id == "default"
    assert (settings.shared_secrets, settings.token) == ((), None)
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert settings.courier_base_url == "https://api.courier.com"
    assert settings.courier_auth_token is None
    assert (settings.allow_unsigned, settings.dry_run) == (False, False)
    assert settings.lease_seconds > settings.send_timeout
    assert settings.retry_base <= settings.retry_cap
    assert settings.give_up_after < settings.key_ttl == 7 * DAY
    assert settings.payload_retention <= settings.record_retention
    assert (settings.send_rate, settings.accept_expired) == (None, False)


def test_minimal_environment_keeps_every_other_default() -> None:
    """A secret and a Courier token are enough; the rest stays at defaults."""
    settings = load()

    expected = dataclasses.replace(
        Settings(), shared_secrets=("whsec-test",), courier_auth_token="ct"
    )
    assert settings == expected


def test_process_environment_is_read_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_settings() reads os.environ at call time."""
    for name, value in {**MINIMAL, "PORT": "9090"}.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.port == 9090


def test_empty_variables_count_as_unset() -> None:
    """A variable set to the empty string leaves the default in place."""
    settings = load(PORT="", DESTINATION_TOKEN="", COURIER_BASE_URL="")

    assert settings.port == 8080
    assert settings.token is None
    assert settings.courier_base_url == "https://api.courier.com"


# each environment variable

# (variable, raw value, field, parsed value): one row per variable read.
VARIABLES: list[tuple[str, str, str, Any]] = [
    ("PORT", " 9001 ", "port", 9001),
    ("DATABASE_URL", " sqlite:////srv/d.db ", "database_url", "sqlite:////srv/d.db"),
    ("DESTINATION_MAPPINGS", "/etc/maps", "mappings_dir", Path("/etc/maps")),
    ("DESTINATION_SOURCE_ID", "segment-prod", "source_id", "segment-prod"),
    ("DESTINATION_SHARED_SECRET", "new, old ,", "shared_secrets", ("new", "old")),
    ("DESTINATION_TOKEN", "tok", "token", "tok"),
    ("DESTINATION_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
    ("DESTINATION_MAX_EVENTS", "100", "max_events", 100),
    (
        "COURIER_BASE_URL",
        "http://127.0.0.1:8081/",
        "courier_base_url",
        "http://127.0.0.1:8081",
    ),
    ("COURIER_AUTH_TOKEN", " pk_test ", "courier_auth_token", "pk_test"),
    ("DESTINATION_READ_TIMEOUT", "2.5", "read_timeout", 2.5),
    ("DESTINATION_SEND_TIMEOUT", "3", "send_timeout", 3.0),
    ("DESTINATION_SEND_CONCURRENCY", "4", "send_concurrency", 4),
    ("DESTINATION_RETRY_BASE", "0.25", "retry_base", 0.25),
    ("DESTINATION_RETRY_CAP", "120", "retry_cap", 120.0),
    ("DESTINATION_GIVE_UP_AFTER", "3600", "give_up_after", 3600.0),
    ("DESTINATION_POLL_INTERVAL", "0.5", "poll_interval", 0.5),
    ("DESTINATION_LEASE_SECONDS", "90", "lease_seconds", 90.0),
    ("DESTINATION_REPEAT_LIMIT", "5", "repeat_limit", 5),
    ("DESTINATION_SEND_RATE", "12.5", "send_rate", 12.5),
    ("DESTINATION_MAX_OUTBOX", "500", "max_outbox", 500),
    ("DESTINATION_BREAKER_THRESHOLD", "7", "breaker_threshold", 7),
    ("DESTINATION_BREAKER_COOLDOWN", "4.5", "breaker_cooldown", 4.5),
    ("DESTINATION_KEY_TTL", "172800", "key_ttl", 172800.0),
    ("DESTINATION_RECORD_RETENTION", "864000", "record_retention", 864000.0),
    ("DESTINATION_PAYLOAD_RETENTION", "86400", "payload_retention", 86400.0),
    ("DESTINATION_PURGE_INTERVAL", "60", "purge_interval", 60.0),
    ("DESTINATION_ACCEPT_EXPIRED", "true", "accept_expired", True),
    ("DESTINATION_MIGRATE", "1", "migrate", True),
    ("DESTINATION_CAPTURE_DIR", "/var/capture", "capture_dir", Path("/var/capture")),
    ("DESTINATION_CAPTURE_MAX_BYTES", "4096", "capture_max_bytes", 4096),
    ("DESTINATION_CAPTURE_INTERVAL", "2", "capture_interval", 2.0),
]


@pytest.mark.parametrize(
    ("name", "raw", "field", "expected"),
    [pytest.param(*row, id=row[0]) for row in VARIABLES],
)
def test_each_variable_is_parsed(
    name: str, raw: str, field: str, expected: Any
) -> None:
    """Every environment variable sets its field, parsed to its type."""
    settings = load(**{name: raw})

    assert getattr(settings, field) == expected


def test_the_table_above_covers_every_variable() -> None:
    """VARIABLES has a row for every variable load_settings reads."""
    covered = [name for name, _, _, _ in VARIABLES]

    assert sorted(covered) == sorted(ENVIRONMENT_NAMES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("1", True, id="1"),
        pytest.param("TRUE", True, id="TRUE"),
        pytest.param(" yes ", True, id="yes"),
        pytest.param("on", True, id="on"),
        pytest.param("0", False, id="0"),
        pytest.param("False", False, id="False"),
        pytest.param("no", False, id="no"),
        pytest.param("off", False, id="off"),
    ],
)
def test_boolean_variables_take_the_usual_spellings(raw: str, expected: bool) -> None:
    """1/true/yes/on and 0/false/no/off, in any case, are booleans."""
    settings = load(DESTINATION_ACCEPT_EXPIRED=raw)

    assert settings.accept_expired is expected


@pytest.mark.parametrize("raw", ["0", "0.0", "-0"])
def test_a_send_rate_of_zero_means_no_limit(raw: str) -> None:
    """DESTINATION_SEND_RATE=0 turns the rate limit off."""
    settings = load(DESTINATION_SEND_RATE=raw)

    assert settings.send_rate is None


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        pytest.param("PORT", "abc", id="PORT-not-a-number"),
        pytest.param("PORT", "70000", id="PORT-too-large"),
        pytest.param("PORT", "-1", id="PORT-negative"),
        pytest.param("PORT", "80.5", id="PORT-fraction"),
        pytest.param("DESTINATION_MAX_BODY_BYTES", "0", id="MAX_BODY_BYTES-zero"),
        pytest.param("DESTINATION_MAX_BODY_BYTES", "1MB", id="MAX_BODY_BYTES-unit"),
        pytest.param("COURIER_BASE_URL", "ftp://x", id="COURIER_BASE_URL-ftp"),
        pytest.param("COURIER_BASE_URL", "api.courier.com", id="COURIER_BASE_URL-bare"),
        pytest.param("COURIER_BASE_URL", "https://", id="COURIER_BASE_URL-no-host"),
        pytest.param("DESTINATION_SHARED_SECRET", " , ", id="SHARED_SECRET-blank"),
        pytest.param("DESTINATION_SHARED_SECRET", "   ", id="SHARED_SECRET-spaces"),
        pytest.param("DESTINATION_TOKEN", "  ", id="TOKEN-blank"),
        pytest.param("DATABASE_URL", " ", id="DATABASE_URL-blank"),
        pytest.param("DESTINATION_READ_TIMEOUT", "0", id="READ_TIMEOUT-zero"),
        pytest.param("DESTINATION_READ_TIMEOUT", "-1", id="READ_TIMEOUT-negative"),
        pytest.param("DESTINATION_READ_TIMEOUT", "nan", id="READ_TIMEOUT-nan"),
        pytest.param("DESTINATION_READ_TIMEOUT", "inf", id="READ_TIMEOUT-inf"),
        pytest.param("DESTINATION_SEND_CONCURRENCY", "0", id="CONCURRENCY-zero"),
        pytest.param("DESTINATION_SEND_CONCURRENCY", "2.5", id="CONCURRENCY-fraction"),
        pytest.param("DESTINATION_LEASE_SECONDS", "soon", id="LEASE_SECONDS-text"),
        pytest.param("DESTINATION_REPEAT_LIMIT", "0", id="REPEAT_LIMIT-zero"),
        pytest.param("DESTINATION_SEND_RATE", "-1", id="SEND_RATE-negative"),
        pytest.param("DESTINATION_SEND_RATE", "nan", id="SEND_RATE-nan"),
        pytest.param("DESTINATION_SEND_RATE", "inf", id="SEND_RATE-inf"),
        pytest.param("DESTINATION_MAX_OUTBOX", "-5", id="MAX_OUTBOX-negative"),
        pytest.param("DESTINATION_KEY_TTL", "week", id="KEY_TTL-text"),
        pytest.param("DESTINATION_ACCEPT_EXPIRED", "maybe", id="ACCEPT_EXPIRED-word"),
        pytest.param("DESTINATION_MIGRATE", "2", id="MIGRATE-number"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str) -> None:
    """A value that cannot be used is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=rf"^{re.escape(name)} has a bad value"):
        load(**{name: raw})


# flags and checks


def test_flags_beat_the_environment() -> None:
    """Keyword overrides (flags) win over the same setting from the environment."""
    environ = {
        **MINIMAL,
        "PORT": "9000",
        "DATABASE_URL": "sqlite:///env.db",
        "DESTINATION_SOURCE_ID": "from-env",
    }

    settings = load_settings(
        environ, port=9100, database_url="sqlite:///flag.db", source_id="from-flag"
    )

    assert (settings.port, settings.database_url, settings.source_id) == (
        9100,
        "sqlite:///flag.db",
        "from-flag",
    )


def test_flags_given_as_none_leave_the_environment_in_place() -> None:
    """A flag that was not given (None) does not hide the environment's value."""
    settings = load_settings({**MINIMAL, "PORT": "9000"}, port=None, dry_run=None)

    assert settings.port == 9000
    assert settings.dry_run is False


def test_refuses_to_start_without_a_secret_or_token() -> None:
    """Without a secret or a token, anyone could post: start-up stops."""
    with pytest.raises(SettingsError, match="DESTINATION_SHARED_SECRET") as caught:
        load_settings({"COURIER_AUTH_TOKEN": "ct"})

    assert "--allow-unsigned" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "overrides"),
    [
        pytest.param({"DESTINATION_TOKEN": "tok"}, {}, id="token"),
        pytest.param({"DESTINATION_SHARED_SECRET": "s"}, {}, id="secret"),
        pytest.param({}, {"allow_unsigned": True}, id="allow-unsigned"),
    ],
)
def test_a_secret_a_token_or_allow_unsigned_is_enough(
    environ: dict[str, str], overrides: dict[str, Any]
) -> None:
    """Any one of secret, token or --allow-unsigned satisfies the auth check."""
    settings = load_settings({"COURIER_AUTH_TOKEN": "ct", **environ}, **overrides)

    assert settings.courier_auth_token == "ct"


def test_refuses_to_start_without_a_courier_token() -> None:
    """Without COURIER_AUTH_TOKEN nothing could be sent: start-up stops."""
    with pytest.raises(SettingsError, match="COURIER_AUTH_TOKEN") as caught:
        load_settings({"DESTINATION_SHARED_SECRET": "s"})

    assert "--dry-run" in str(caught.value)


def test_dry_run_needs_no_courier_token() -> None:
    """A dry run starts without COURIER_AUTH_TOKEN."""
    settings = load_settings({"DESTINATION_SHARED_SECRET": "s"}, dry_run=True)

    assert settings.dry_run is True
    assert settings.courier_auth_token is None


def test_retry_base_above_cap_is_refused() -> None:
    """A base delay larger than the cap is a SettingsError naming both."""
    with pytest.raises(SettingsError, match="DESTINATION_RETRY_BASE") as caught:
        load(DESTINATION_RETRY_BASE="10", DESTINATION_RETRY_CAP="5")

    assert "DESTINATION_RETRY_CAP" in str(caught.value)


@pytest.mark.parametrize("lease", ["5", "10"])
def test_lease_not_above_send_timeout_is_refused(lease: str) -> None:
    """A lease that could expire during a send is a SettingsError."""
    with pytest.raises(SettingsError, match="DESTINATION_LEASE_SECONDS"):
        load(DESTINATION_LEASE_SECONDS=lease, DESTINATION_SEND_TIMEOUT="10")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        pytest.param({"DESTINATION_KEY_TTL": "3600"}, "KEY_TTL", id="ttl-under-a-day"),
        pytest.param(
            {"DESTINATION_KEY_TTL": str(366 * DAY)}, "KEY_TTL", id="ttl-over-a-year"
        ),
        pytest.param(
            {"DESTINATION_KEY_TTL": str(DAY), "DESTINATION_GIVE_UP_AFTER": str(DAY)},
            "GIVE_UP_AFTER",
            id="give-up-at-key-ttl",
        ),
        pytest.param(
            {
                "DESTINATION_RECORD_RETENTION": str(DAY),
                "DESTINATION_PAYLOAD_RETENTION": str(2 * DAY),
            },
            "RECORD_RETENTION",
            id="records-shorter-than-payloads",
        ),
    ],
)
def test_retention_settings_must_fit_the_key_lifetime(
    environ: dict[str, str], variable: str
) -> None:
    """Keys, retries and records must outlive one another in the right order."""
    with pytest.raises(SettingsError, match=f"^DESTINATION_{variable}"):
        load(**environ)


@pytest.mark.parametrize(
    ("environ", "role"),
    [
        pytest.param({"COURIER_AUTH_TOKEN": "ct"}, "worker", id="worker"),
        pytest.param({}, "tool", id="tool"),
    ],
)
def test_roles_that_take_no_events_need_no_credentials(
    environ: dict[str, str], role: Any
) -> None:
    """A worker needs only the Courier token; a tool needs neither."""
    settings = load_settings(environ, role=role)

    assert settings.shared_secrets == ()


def test_a_worker_still_needs_a_courier_token() -> None:
    """A worker sends, so it refuses to start without COURIER_AUTH_TOKEN."""
    with pytest.raises(SettingsError, match="COURIER_AUTH_TOKEN"):
        load_settings({}, role="worker")


def test_check_settings_accepts_the_minimal_settings() -> None:
    """check_settings passes settings built from the minimal environment."""
    settings = load()

    check_settings(settings)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start-up."""
    settings = load()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


# apply_local_defaults


def test_local_defaults_create_a_private_secret_file(tmp_path: Path) -> None:
    """serve --local writes a new 0600 secret file and returns the secret once."""
    secret_file = tmp_path / "data" / "shared-secret"

    overrides, created = apply_local_defaults({}, secret_file)

    assert created is not None
    assert len(created) >= 32
    assert secret_file.read_text(encoding="utf-8") == created + "\n"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert overrides == {"shared_secrets": (created,), "dry_run": True}


def test_local_defaults_reuse_the_secret_file(tmp_path: Path) -> None:
    """A second run reads the same secret and does not announce it again."""
    secret_file = tmp_path / "shared-secret"
    _, created = apply_local_defaults({}, secret_file)

    overrides, created_again = apply_local_defaults({}, secret_file)

    assert created_again is None
    assert overrides["shared_secrets"] == (created,)


def test_local_defaults_use_a_hand_written_secret_file(tmp_path: Path) -> None:
    """An existing secret file is read, with its trailing newline stripped."""
    secret_file = tmp_path / "shared-secret"
    secret_file.write_text("my-own-secret\n", encoding="utf-8")

    overrides, created = apply_local_defaults({}, secret_file)

    assert created is None
    assert overrides["shared_secrets"] == ("my-own-secret",)


def test_local_defaults_keep_configured_values(tmp_path: Path) -> None:
    """A secret and a Courier token in the environment are left alone."""
    secret_file = tmp_path / "shared-secret"
    environ = {"DESTINATION_SHARED_SECRET": "s", "COURIER_AUTH_TOKEN": "ct"}

    overrides, created = apply_local_defaults(environ, secret_file)

    assert (overrides, created) == ({}, None)
    assert not secret_file.exists()


def test_local_defaults_lead_to_loadable_settings(tmp_path: Path) -> None:
    """The overrides of serve --local make settings that pass the checks."""
    overrides, created = apply_local_defaults({}, tmp_path / "shared-secret")

    settings = load_settings({}, **overrides)

    assert settings.shared_secrets == (created,)
    assert settings.dry_run is True


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param("\n", id="newline"),
        pytest.param("   \n", id="spaces"),
    ],
)
def test_local_defaults_never_use_an_empty_secret(tmp_path: Path, content: str) -> None:
    """With a blank secret file, serve --local stops or makes a new secret."""
    secret_file = tmp_path / "shared-secret"
    secret_file.write_text(content, encoding="utf-8")

    try:
        overrides, _ = apply_local_defaults({}, secret_file)
        settings = load_settings({}, **overrides)
    except SettingsError:
        return

    assert all(secret.strip() for secret in settings.shared_secrets)


# with_dry_run_database


def test_dry_run_moves_the_default_database_aside() -> None:
    """A dry run with the default DATABASE_URL uses the dry-run file."""
    settings = Settings(dry_run=True)

    moved = with_dry_run_database(settings)

    assert settings.database_url == DEFAULT_DATABASE_URL
    assert moved.database_url == DEFAULT_DRY_RUN_DATABASE_URL
    assert moved == dataclasses.replace(settings, database_url=moved.database_url)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(Settings(), id="live-default-url"),
        pytest.param(Settings(database_url="sqlite:///x.db"), id="live-own-url"),
        pytest.param(
            Settings(dry_run=True, database_url="sqlite:///x.db"),
            id="dry-run-own-url",
        ),
    ],
)
def test_dry_run_database_keeps_explicit_or_live_urls(settings: Settings) -> None:
    """A live run, or a dry run with its own DATABASE_URL, is left unchanged."""
    result = with_dry_run_database(settings)

    assert result == settings
