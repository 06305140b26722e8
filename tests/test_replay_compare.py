"""``destination replay --compare OLD_DIR``: a mapping edit diffed on an archive."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from destination import cli
from destination.fake_courier import FakeCourier
from destination.settings import Settings
from destination.store import create_store
from tests.conftest import COURIER_TOKEN, TEST_MAPPINGS, compact, make_event

EVENTS = 200
NAMES = ("Order Completed", "Course Clicked", "Product Viewed", "Order Audited")
# What the edits in ``mapping_dirs`` do to the generated archive, per mapping.
EXPECTED = {
    "order-confirmation": {"events": 50, "changed": 50},
    "course-clicked": {"events": 50, "unchanged": 50},
    "product-viewed": {"events": 50, "unchanged": 50},
    "order-audit": {"events": 50, "unchanged": 25, "disappeared": 25},
    "course-digest": {"events": 50, "appeared": 50},
    "order-audit-copy": {"events": 50, "disappeared": 50},
}
COURSE_DIGEST = """
  - name: course-digest
    when: {event: Course Clicked}
    send:
      message:
        to: {user_id: {"@path": "$.userId"}}
        template: course-digest
"""


@dataclass(frozen=True, slots=True)
class Compared:
    code: int
    summary: dict[str, Any]
    mappings: dict[str, dict[str, Any]]
    samples: list[dict[str, Any]]
    problems: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MappingDirs:
    old: Path
    new: Path


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """cli.run configures structlog for the process; later tests need it back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def mapping_dirs(tmp_path: Path) -> MappingDirs:
    """OLD is the test mappings; the current copy changes a template, makes
    order-audit's recipient optional, drops order-audit-copy, adds course-digest."""
    old = shutil.copytree(TEST_MAPPINGS, tmp_path / "old")
    new = shutil.copytree(TEST_MAPPINGS, tmp_path / "new")
    mappings = new / "orders.yaml"
    edit(mappings, "template: order-confirmation", "template: order-receipt")
    edit(
        mappings,
        '{user_id: {"@path": "$.userId"}}\n        template: audit-a',
        '{user_id: {"@path": "$.properties.owner"}}\n        template: audit-a',
    )
    text = mappings.read_text()
    copy_at = text.index("  - name: order-audit-copy")
    mappings.write_text(text[:copy_at].rstrip("\n") + "\n" + COURSE_DIGEST)
    return MappingDirs(old, new)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """200 events, gzipped JSON lines: 50 of each name; half the audits name an
    owner (the same user), half do not."""
    path = tmp_path / "archive.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(map(line_of, range(EVENTS)))))
    return path


def line_of(n: int) -> bytes:
    properties: dict[str, Any] = {"orderId": f"o-{n}", "title": "t", "sku": "s"}
    if n % 8 == 3:
        properties["owner"] = f"user-{n}"
    event = make_event(
        f"m-{n:04}", event=NAMES[n % 4], userId=f"user-{n}", properties=properties
    )
    return compact(event) + b"\n"


@pytest.fixture
def compare_env(
    settings: Settings, mapping_dirs: MappingDirs, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The test store, the edited mappings as current, the fake API for sends."""
    env = {
        "DATABASE_URL": settings.database_url,
        "DESTINATION_MAPPINGS": str(mapping_dirs.new),
        "COURIER_BASE_URL": settings.courier_base_url,
        "COURIER_AUTH_TOKEN": COURIER_TOKEN,
        "DESTINATION_POLL_INTERVAL": "0.05",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings


async def compare(capsys: pytest.CaptureFixture[str], *args: str) -> Compared:
    """Run ``destination replay --json ARGS`` in a thread with its own loop."""
    code = await asyncio.to_thread(cli.run, ["replay", "--json", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_kind.setdefault(line["kind"], []).append(line)
    [summary] = by_kind.pop("summary")
    mappings = {line["mapping"]: line for line in by_kind.pop("compare", [])}
    samples = by_kind.pop("compare_sample", [])
    problems = [line for kind in by_kind.values() for line in kind]
    return Compared(code, summary, mappings, samples, problems)


def changes(line: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in line.items() if k not in ("kind", "mapping") and v}


def database_of(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


async def test_counts_per_mapping(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
    fake: FakeCourier,
) -> None:
    """Each mapping counts its changed, appeared and disappeared pairs; exit 0."""
    result = await compare(capsys, "--compare", str(mapping_dirs.old), str(archive))

    assert result.code == 0
    assert {name: changes(line) for name, line in result.mappings.items()} == EXPECTED
    assert list(result.mappings) == list(EXPECTED)
    totals = ("unchanged", "changed", "appeared", "disappeared")
    assert [result.summary[name] for name in totals] == [125, 50, 50, 75]
    assert (result.summary["requests"], result.summary["no_recipient"]) == (225, 25)
    assert result.problems == []
    assert fake.received == []
    assert not await asyncio.to_thread(database_of(compare_env).exists)


async def test_a_changed_field_shows_in_the_diff(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
) -> None:
    """The edited template is a -/+ pair in the diff, naming messageId and line."""
    args = ["replay", "--dry-run", "--compare", str(mapping_dirs.old), str(archive)]

    code = await asyncio.to_thread(cli.run, args)

    out = capsys.readouterr().out
    assert code == 0
    assert f"order-confirmation: changed, messageId 'm-0000' at {archive}:1 " in out
    assert '-    "template": "order-confirmation",\n' in out
    assert '+    "template": "order-receipt",\n' in out
    assert "(3 of 50 differences of 'order-confirmation' shown;" in out
    assert re.search(r"^  order-audit-copy +50 +0 +0 +0 +50$", out, re.MULTILINE)


async def test_samples_bound_each_mapping(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
) -> None:
    """--samples N keeps the first N differences of each mapping, with both sides."""
    old = str(mapping_dirs.old)

    result = await compare(capsys, "--compare", old, "--samples", "2", str(archive))

    per_mapping = [(s["mapping"], s["change"], s["messageId"]) for s in result.samples]
    assert per_mapping == [
        ("order-confirmation", "changed", "m-0000"),
        ("order-confirmation", "changed", "m-0004"),
        ("order-audit", "disappeared", "m-0007"),
        ("order-audit", "disappeared", "m-0015"),
        ("course-digest", "appeared", "m-0001"),
        ("course-digest", "appeared", "m-0005"),
        ("order-audit-copy", "disappeared", "m-0003"),
        ("order-audit-copy", "disappeared", "m-0007"),
    ]
    [audit, _] = [s for s in result.samples if s["mapping"] == "order-audit"]
    assert audit["new"] is None
    assert audit["old"]["body"]["message"]["to"] == {"user_id": "user-7"}
    assert (audit["location"]["file"], audit["location"]["line"]) == (str(archive), 8)


async def test_the_store_is_read_and_left_alone(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """Against a store, pairs it holds are duplicates, still compared; no row moves."""
    done = tmp_path / "done.jsonl"
    done.write_bytes(b"".join(map(line_of, range(4))))
    sent = await asyncio.to_thread(cli.run, ["replay", str(done)])
    capsys.readouterr()
    before = await store_counts(compare_env)
    requests = len(fake.received)

    result = await compare(capsys, "--compare", str(mapping_dirs.old), str(archive))

    assert (sent, requests) == (0, 5)
    assert await store_counts(compare_env) == before
    assert len(fake.received) == requests
    assert (result.summary["duplicates"], result.summary["accepted"]) == (4, 196)
    assert result.mappings["order-confirmation"]["changed"] == 50


async def store_counts(settings: Settings) -> dict[str, int]:
    store = create_store(settings.database_url, "live")
    await store.open()
    try:
        return await store.counts()
    finally:
        await store.close()


async def test_unusable_lines_exit_1(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    tmp_path: Path,
) -> None:
    """As in any replay, a line that cannot be used exits 1; the rest is compared."""
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(line_of(0) + b"{not json\n" + line_of(4))

    result = await compare(capsys, "--compare", str(mapping_dirs.old), str(path))

    assert result.code == 1
    assert [problem["kind"] for problem in result.problems] == ["invalid_line"]
    assert changes(result.mappings["order-confirmation"]) == {
        "events": 2,
        "changed": 2,
    }


async def test_an_event_the_current_mappings_reject_disappears(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    tmp_path: Path,
) -> None:
    """A tracking plan that now rejects the event: its old request disappears."""
    edit(
        mapping_dirs.new / "orders.yaml",
        "    when: {type: track, event: Order Completed}\n",
        "    when: {type: track, event: Order Completed}\n"
        "    properties_schema: {properties: {orderId: {type: integer}}}\n",
    )
    path = tmp_path / "orders.jsonl"
    path.write_bytes(line_of(0) + line_of(4))

    result = await compare(capsys, "--compare", str(mapping_dirs.old), str(path))

    assert result.code == 1
    assert [problem["kind"] for problem in result.problems] == ["rejected"] * 2
    assert changes(result.mappings["order-confirmation"]) == {
        "events": 2,
        "disappeared": 2,
    }


async def test_mapping_filter_reaches_a_removed_mapping(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
) -> None:
    """--mapping may name a mapping only OLD_DIR has; only its pairs are compared."""
    old = str(mapping_dirs.old)

    result = await compare(
        capsys, "--compare", old, "--mapping", "order-audit-copy", str(archive)
    )

    assert result.code == 0
    assert {name: changes(line) for name, line in result.mappings.items()} == {
        "order-audit-copy": {"events": 50, "disappeared": 50}
    }
    assert result.summary["filtered"] == EVENTS


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--compare", "{tmp}/nowhere"], "does not exist", id="missing"),
        pytest.param(
            ["--compare", "{broken}"], "field 'sned'", id="old-mappings-broken"
        ),
        pytest.param(
            ["--compare", "{old}", "--to", "http://127.0.0.1:9/webhook"],
            "--compare and --to exclude each other",
            id="with-to",
        ),
        pytest.param(["--samples", "2"], "--compare only", id="samples-alone"),
        pytest.param(
            ["--compare", "{old}", "--samples", "-1"],
            "0 or more",
            id="samples-negative",
        ),
        pytest.param(
            ["--compare", "{old}", "--mapping", "nope"],
            "'nope' is not among the mappings in",
            id="unknown-mapping",
        ),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    compare_env: Settings,
    mapping_dirs: MappingDirs,
    archive: Path,
    tmp_path: Path,
    args: list[str],
    needle: str,
) -> None:
    """A missing or broken OLD_DIR and conflicting flags stop with exit code 2."""
    broken = TEST_MAPPINGS.parent / "mappings-broken"
    filled = [
        arg.format(tmp=tmp_path, old=mapping_dirs.old, broken=broken) for arg in args
    ]

    code = cli.run(["replay", *filled, str(archive)])

    assert code == 2
    assert needle in capsys.readouterr().err
