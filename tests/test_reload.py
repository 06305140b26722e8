"""Hot reload of the mappings in a running service: file changes and SIGHUP."""

from __future__ import annotations

import io
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from destination import reload
from destination.fake_courier import FakeCourier
from destination.mapping import MappingSet, load_mappings
from destination.runtime import runtime_key
from tests.conftest import compact, make_event, signed_headers, wait_for

MAPPING = """\
mappings:
  - name: {name}
    when: {{event: {event}}}
    send:
      message:
        template: {name}
"""


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")


async def post(client: Any, event: dict[str, Any]) -> dict[str, Any]:
    body = compact(event)
    response = await client.post(
        "/webhook", data=io.BytesIO(body), headers=signed_headers(body)
    )
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


def names(client: Any) -> list[str]:
    mappings: MappingSet = client.app[runtime_key].mappings
    return [mapping.name for mapping in mappings.mappings]


@pytest.fixture
def mapping_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "mappings"
    directory.mkdir()
    write(directory, "a.yaml", MAPPING.format(name="order", event="Order Completed"))
    return directory


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload, "WATCH_INTERVAL", 0.05)


@pytest.mark.usefixtures("fast_watch")
async def test_a_changed_file_is_picked_up(
    make_service: Any, mapping_dir: Path, fake: FakeCourier
) -> None:
    """Adding a mapping file while serving makes its events map, with no restart."""
    client = await make_service(mappings=load_mappings(mapping_dir))
    assert (await post(client, make_event("m-1", event="Signed Up")))["unmapped"] == 1

    with capture_logs() as logs:
        write(mapping_dir, "b.yaml", MAPPING.format(name="welcome", event="Signed Up"))
        await wait_for(lambda: names(client) == ["order", "welcome"])

    assert (await post(client, make_event("m-2", event="Signed Up")))["accepted"] == 1
    await wait_for(lambda: len(fake.executed) == 1)
    assert fake.executed[0].json()["message"]["template"] == "welcome"
    (reloaded,) = [log for log in logs if log["event"] == "mappings.reloaded"]
    assert (reloaded["reason"], reloaded["mappings"]) == ("file_changed", 2)


@pytest.mark.usefixtures("fast_watch")
async def test_a_broken_file_keeps_the_old_mappings(
    make_service: Any, mapping_dir: Path, fake: FakeCourier
) -> None:
    """A reload that fails keeps serving the previous set and logs every problem."""
    client = await make_service(mappings=load_mappings(mapping_dir))
    before = client.app[runtime_key].mappings

    with capture_logs() as logs:
        write(
            mapping_dir, "a.yaml", "mappings:\n  - name: order\n    when: {evnt: X}\n"
        )
        write(mapping_dir, "c.yaml", "mappings: [\n")
        await wait_for(
            lambda: any(e["event"] == "mappings.reload_failed" for e in logs)
        )

    assert client.app[runtime_key].mappings is before
    failed = next(log for log in logs if log["event"] == "mappings.reload_failed")
    assert failed["kept"] == 1
    assert any("unknown key 'evnt'" in problem for problem in failed["problems"])
    assert any("c.yaml" in problem for problem in failed["problems"])
    assert (await post(client, make_event("m-1")))["accepted"] == 1
    await wait_for(lambda: len(fake.executed) == 1)
    assert fake.executed[0].json()["message"]["template"] == "order"

    with capture_logs() as logs:
        os.remove(mapping_dir / "c.yaml")
        write(mapping_dir, "a.yaml", MAPPING.format(name="order-2", event="X"))
        await wait_for(lambda: names(client) == ["order-2"])
    assert [log["event"] for log in logs] == ["mappings.reloaded"]


async def test_sighup_reloads(
    make_service: Any, mapping_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP reloads at once, without waiting for the watcher."""
    monkeypatch.setattr(reload, "WATCH_INTERVAL", 3600)
    client = await make_service(mappings=load_mappings(mapping_dir))

    with capture_logs() as logs:
        write(mapping_dir, "b.yaml", MAPPING.format(name="welcome", event="Signed Up"))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: names(client) == ["order", "welcome"])

    (reloaded,) = [log for log in logs if log["event"] == "mappings.reloaded"]
    assert reloaded["reason"] == "sighup"


async def test_sets_built_by_hand_are_not_watched(make_service: Any) -> None:
    """A mapping set that did not come from a directory is left as it is."""
    client = await make_service(mappings=MappingSet(()))

    assert client.app[runtime_key].mappings.source is None
    assert not reload._reloaders
