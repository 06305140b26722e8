"""The service as real processes: the README demo, crashes, start-up refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from destination.fake_courier import FakeCourier
from destination.idempotency import derive_idempotency_key
from destination.signature import sign
from tests.conftest import COURIER_TOKEN, SECRET, compact, make_event, wait_for
from tests.paths import REPO
from tests.processes import (
    DESTINATION,
    free_port,
    start,
    stop,
    wait_until_healthy,
)


def service_env(database: Path, courier: TestServer, port: int) -> dict[str, str]:
    """A service on ``port`` that sends to the fake API, with fast polling."""
    return {
        "DATABASE_URL": f"sqlite:///{database}",
        "DESTINATION_SHARED_SECRET": SECRET,
        "COURIER_BASE_URL": str(courier.make_url("")).rstrip("/"),
        "COURIER_AUTH_TOKEN": COURIER_TOKEN,
        "DESTINATION_MAPPINGS": str(REPO / "tests" / "data" / "mappings"),
        "DESTINATION_POLL_INTERVAL": "0.05",
        "PORT": str(port),
    }


def readme_demo_script() -> str:
    """The shell block between the README's demo markers."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- demo:send -->\n```sh\n(.*?)```\n<!-- /demo:send -->", text, re.S
    )
    assert match is not None, "the README lost its demo block"
    return match.group(1)


def wait_for_output(log: Path, needle: str, count: int = 1) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        if text.count(needle) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared {count} times in {log}")


def test_readme_demo(tmp_path: Path) -> None:
    """The README demo: fake API, service, signed curl; one send, then a duplicate."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    courier_port, service_port = free_port(), free_port()
    courier_log, service_log = tmp_path / "courier.log", tmp_path / "service.log"
    courier = start(
        ["fake-courier", "--port", str(courier_port)],
        cwd=tmp_path,
        env={},
        log=courier_log,
    )
    env = {
        "COURIER_BASE_URL": f"http://127.0.0.1:{courier_port}",
        "COURIER_AUTH_TOKEN": "demo-token",
        "DESTINATION_POLL_INTERVAL": "0.1",
    }
    service = start(
        [
            "serve",
            "--local",
            "--mappings",
            "examples/mappings",
            "--port",
            str(service_port),
        ],
        cwd=tmp_path,
        env=env,
        log=service_log,
    )
    script = readme_demo_script().replace("127.0.0.1:8080", f"127.0.0.1:{service_port}")
    try:
        wait_for_output(courier_log, "listening")
        wait_until_healthy(service_port, service)

        first = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, check=True
        )
        printed = wait_for_output(courier_log, "POST /send")
        second = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, check=True
        )
        time.sleep(0.5)
        printed_after = courier_log.read_text()
    finally:
        stop(service)
        stop(courier)

    key = derive_idempotency_key(
        "default", "ajs-f8ca1e4de5024d9430b3928bd8ac6b96", "course-clicked"
    )
    assert json.loads(first.stdout)["accepted"] == 1
    assert json.loads(second.stdout)["duplicates"] == 1
    assert f"Idempotency-Key: {key}" in printed
    assert printed_after.count("POST /send") == 1
    logged = service_log.read_text()
    assert "Generated a shared secret" in logged
    assert f'"courier_base_url": "http://127.0.0.1:{courier_port}"' in logged
    assert "demo-token" not in logged


async def test_sigkill_after_ack_loses_nothing(
    tmp_path: Path, fake: FakeCourier, courier_server: TestServer
) -> None:
    """SIGKILL right after the 200s; after a restart every event is sent once."""
    fake.hold()
    port = free_port()
    env = {
        **service_env(tmp_path / "crash.db", courier_server, port),
        "DESTINATION_LEASE_SECONDS": "2",
        "DESTINATION_SEND_TIMEOUT": "1",
        "DESTINATION_RETRY_BASE": "0.05",
        "DESTINATION_RETRY_CAP": "0.2",
    }
    log = tmp_path / "service.log"
    events = [make_event(f"m-crash-{i}") for i in range(20)]

    service = start(["serve", "--host", "127.0.0.1"], cwd=tmp_path, env=env, log=log)
    wait_until_healthy(port, service)
    for start_at in range(0, 20, 5):
        _post_signed(port, events[start_at : start_at + 5])
    stop(service, signal.SIGKILL)
    fake.release()
    restarted = start(["serve", "--host", "127.0.0.1"], cwd=tmp_path, env=env, log=log)
    try:
        wait_until_healthy(port, restarted)
        await wait_for(lambda: len(fake.executed) >= 20, within=30)
        await _drain(port)
    finally:
        stop(restarted)

    expected = {
        derive_idempotency_key("default", e["messageId"], "order-confirmation")
        for e in events
    }
    assert sorted(fake.executed_keys()) == sorted(expected)


def _post_signed(port: int, events: list[dict[str, Any]]) -> None:
    body = compact(events)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(SECRET, body)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["accepted"] == len(events)


async def _drain(port: int) -> None:
    """Wait until the restarted service reports nothing left to send."""

    def metrics() -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=5
        ) as answer:
            return str(answer.read().decode())

    await wait_for(
        lambda: 'destination_store{kind="outbox_pending"} 0' in metrics(), within=30
    )


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`destination check --json | head`: no traceback when the reader is gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader closes before a byte is written

    try:
        finished = subprocess.run(
            [*DESTINATION, "check", "examples/mappings", "--json"],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)

    assert (finished.returncode, finished.stderr) == (1, b"")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param(
            {
                "COURIER_AUTH_TOKEN": "x",
                "DESTINATION_SHARED_SECRET": "",
                "DESTINATION_TOKEN": "",
            },
            "DESTINATION_SHARED_SECRET or DESTINATION_TOKEN",
            id="no-credentials",
        ),
        pytest.param(
            {
                "PORT": "eighty",
                "DESTINATION_SHARED_SECRET": "s",
                "COURIER_AUTH_TOKEN": "x",
            },
            "PORT",
            id="bad-port",
        ),
    ],
)
def test_refuses_to_start_on_bad_settings(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    """No credentials or a bad value: start-up stops with exit 2, naming it."""
    log = tmp_path / "out.log"

    code = start(["serve"], cwd=tmp_path, env=env, log=log).wait(timeout=30)

    assert code == 2
    assert named in log.read_text()


def test_refuses_broken_mappings(tmp_path: Path) -> None:
    """A mapping file that does not load stops start-up with file and line."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "bad.yaml").write_text("mappings:\n  - name: x\n    sned: {}\n")
    log = tmp_path / "out.log"
    env = {"DESTINATION_SHARED_SECRET": "s", "DESTINATION_MAPPINGS": str(mappings)}

    code = start(["serve", "--dry-run"], cwd=tmp_path, env=env, log=log).wait(
        timeout=30
    )

    assert code == 1
    assert "bad.yaml:3" in log.read_text()


async def test_sigterm_finishes_sends_in_flight(
    tmp_path: Path, fake: FakeCourier, courier_server: TestServer
) -> None:
    """SIGTERM: the worker finishes its current sends and records them; exit 0."""
    from destination.fake_courier import Fault

    fake.faults.extend(Fault("delay", seconds=0.5) for _ in range(5))
    port = free_port()
    env = service_env(tmp_path / "term.db", courier_server, port)
    log = tmp_path / "service.log"
    service = start(["serve", "--host", "127.0.0.1"], cwd=tmp_path, env=env, log=log)
    wait_until_healthy(port, service)
    _post_signed(port, [make_event(f"m-term-{i}") for i in range(5)])
    await wait_for(lambda: fake.executing() == 5)

    service.send_signal(signal.SIGTERM)
    await wait_for(lambda: service.poll() is not None, within=30)
    restarted = start(["serve", "--host", "127.0.0.1"], cwd=tmp_path, env=env, log=log)
    try:
        wait_until_healthy(port, restarted)
        await _drain(port)
    finally:
        stop(restarted)

    assert service.returncode == 0
    assert len(fake.executed) == 5
    assert len(fake.received) == 5, "a finished send was sent again after restart"
    assert "delivery.stopped" in log.read_text()


async def test_slow_headers_are_cut_at_the_read_timeout(tmp_path: Path) -> None:
    """A connection trickling its headers is closed after DESTINATION_READ_TIMEOUT."""
    import asyncio

    port = free_port()
    env = {
        "DESTINATION_SHARED_SECRET": SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'slow.db'}",
        "DESTINATION_READ_TIMEOUT": "1",
        "PORT": str(port),
    }
    service = start(
        ["serve", "--dry-run", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=env,
        log=tmp_path / "service.log",
    )
    try:
        wait_until_healthy(port, service)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()

        closed = await asyncio.wait_for(reader.read(), timeout=20)
        writer.close()
    finally:
        stop(service)

    assert service.returncode == 0
    assert b"HTTP/1.1 2" not in closed
