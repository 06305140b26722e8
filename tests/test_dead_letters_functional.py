"""Dead letters end to end: a refused send, its reason, a fix, a retry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from destination import cli
from destination.dead_letters import parse_age
from destination.errors import EXIT_FAILURE, EXIT_OK
from destination.fake_courier import FakeCourier, Fault
from destination.idempotency import derive_idempotency_key
from destination.mapping import load_mappings
from tests.conftest import compact, make_event, signed_headers, store_of, wait_for

MAPPING = """
mappings:
  - name: welcome
    when: {{event: Signed Up}}
    send:
      message:
        to: {{user_id: {{"@path": "$.userId"}}}}
        template: {template}
"""


def write_mapping(directory: Path, template: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "welcome.yaml").write_text(MAPPING.format(template=template))
    return directory


def dead_letters(database_url: str, *args: str, mappings: Path | None = None) -> Any:
    """Run ``destination dead-letters`` as a user would, in its own process."""
    command = [sys.executable, "-m", "destination", "dead-letters"]
    command += ["--database-url", database_url, *args]
    if mappings is not None:
        command += ["--mappings", str(mappings)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


async def dead_count(client: Any) -> int:
    return int((await store_of(client).counts()).get("pairs_dead_letter", 0))


async def test_fix_the_mapping_then_retry(
    make_service: Any, fake: FakeCourier, settings: Any, tmp_path: Path
) -> None:
    """A 400 is a dead letter with its reason; after the fix, a new key delivers it."""
    fake.known_templates = frozenset({"welcome"})
    directory = write_mapping(tmp_path / "mappings", "welcom")
    client = await make_service(mappings=load_mappings(directory))
    body = compact(make_event("m-dl-1", event="Signed Up"))
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: _is(dead_count(client), 1))

    listing = dead_letters(settings.database_url, "list", "--json")
    write_mapping(directory, "welcome")
    retried = dead_letters(settings.database_url, "retry", "--all", mappings=directory)
    await wait_for(lambda: len(fake.executed) == 1)

    [letter] = [json.loads(line) for line in listing.stdout.splitlines()]
    assert letter["last_status"] == 400
    assert "not found" in letter["last_error"]
    assert letter["reason"] == "The API refused the request with 400."
    assert retried.returncode == 0, retried.stderr
    assert "new_key" in retried.stdout
    new_key = derive_idempotency_key("default", "m-dl-1", "welcome", 1)
    assert fake.executed_keys() == [new_key]
    assert fake.executed[0].json()["message"]["template"] == "welcome"
    assert await dead_count(client) == 0


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_identical_body_keeps_its_key(
    make_service: Any, fake: FakeCourier, settings: Any
) -> None:
    """Retrying without a change keeps generation 0, so the API can deduplicate."""
    fake.faults.append(Fault("status", status=400, body='{"message":"try later"}'))
    client = await make_service()
    body = compact(make_event("m-dl-2"))
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: _is(dead_count(client), 1))
    mappings = Path(__file__).parent / "data" / "mappings"

    retried = dead_letters(settings.database_url, "retry", "1", mappings=mappings)
    await wait_for(lambda: len(fake.executed) == 1)

    assert "same_key" in retried.stdout
    key = derive_idempotency_key("default", "m-dl-2", "order-confirmation", 0)
    assert fake.executed_keys() == [key]


async def test_new_key_is_forced_with_a_warning(
    make_service: Any, fake: FakeCourier, settings: Any
) -> None:
    """--new-key takes the next generation even for the same body, and warns."""
    fake.faults.extend(Fault("status", status=500) for _ in range(3))
    client = await make_service(repeat_limit=3)
    body = compact(make_event("m-dl-3"))
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: _is(dead_count(client), 1))
    mappings = Path(__file__).parent / "data" / "mappings"

    retried = dead_letters(
        settings.database_url, "retry", "--all", "--new-key", mappings=mappings
    )
    await wait_for(lambda: len(fake.executed) == 1)

    assert "notified twice" in retried.stderr
    key = derive_idempotency_key("default", "m-dl-3", "order-confirmation", 1)
    assert fake.executed_keys() == [key]


async def test_purge_keeps_the_record(
    make_service: Any, fake: FakeCourier, settings: Any
) -> None:
    """Purged dead letters are gone from the list but a redelivery stays a duplicate."""
    fake.faults.append(Fault("status", status=422))
    client = await make_service()
    body = compact(make_event("m-dl-4"))
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: _is(dead_count(client), 1))

    purged = dead_letters(settings.database_url, "purge", "--older-than", "0s")
    listing = dead_letters(settings.database_url, "list")
    again = await client.post("/webhook", data=body, headers=signed_headers(body))

    assert "Purged 1" in purged.stdout
    assert "No dead letters." in listing.stdout
    assert (await again.json())["duplicates"] == 1


def test_usage_errors(settings: Any) -> None:
    """retry without ids and a bad age are usage errors (exit 2)."""
    bare = dead_letters(settings.database_url, "retry")
    bad_age = dead_letters(settings.database_url, "purge", "--older-than", "soon")

    assert bare.returncode == 2 and "--all" in bare.stderr
    assert bad_age.returncode == 2 and "soon" in bad_age.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["dead-letters", "--dry-run", "list"], id="before"),
        pytest.param(["dead-letters", "list", "--dry-run"], id="after"),
        pytest.param(
            ["dead-letters", "purge", "--older-than", "1d", "--dry-run"],
            id="purge-after",
        ),
        pytest.param(["rejected", "export", "--dry-run"], id="rejected-after"),
    ],
)
def test_store_flags_work_before_or_after_the_action(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run and --database-url are taken on either side of the action."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    where = ["--database-url", url]

    dry = cli.run([*argv[:2], *where, *argv[2:]])
    live = cli.run(["dead-letters", "list", *where])

    assert dry == EXIT_OK
    assert live == EXIT_FAILURE  # the flags reached the store: it is a dry-run one
    assert "written by a dry-run service" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["dead-letters", "rejected"])
def test_export_never_overwrites(command: str, tmp_path: Path) -> None:
    """An existing --output file is a one-line error (exit 1), left as it was."""
    output = tmp_path / "exported.jsonl"
    output.write_text("kept\n")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    argv = [command, "export", "--output", str(output), "--database-url", url]

    exported = subprocess.run(
        [sys.executable, "-m", "destination", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert exported.returncode == EXIT_FAILURE
    assert exported.stderr == (
        f"destination: {output} exists; choose a new file, the export never "
        "overwrites\n"
    )
    assert output.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30d", 30 * 86400, id="days"),
        pytest.param("12h", 12 * 3600, id="hours"),
        pytest.param("90m", 5400, id="minutes"),
        pytest.param("15", 15, id="plain"),
    ],
)
def test_parse_age(text: str, seconds: float) -> None:
    """Ages take d, h, m, s units or plain seconds."""
    assert parse_age(text) == seconds
