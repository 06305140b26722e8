"""Hot reload of the mappings: on SIGHUP, or when a mapping file changes.

A reload loads the whole mapping directory and the tracking plan anew, off
the event loop, then swaps ``Runtime.mappings`` in one assignment: a request
sees the old set or the new one, never a mix. When any file is broken the
previous mappings keep running and the log says why (``mappings.reload_failed``
with every problem); a good reload logs ``mappings.reloaded`` with the count.

Changes are found by polling: every ``WATCH_INTERVAL`` seconds the files'
paths and contents are hashed. It needs no extra dependency and no inotify
watch limits, and a mapping directory is small.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from destination.errors import MappingError
from destination.log import get_logger
from destination.mapping import load_mappings
from destination.mapping_file import find_mapping_files
from destination.runtime import Runtime, runtime_key
from destination.tracking_plan import default_plan_dir

log = get_logger(__name__)

WATCH_INTERVAL = 1.0


class MappingReloader:
    """Reloads one runtime's mappings from the directory they came from."""

    def __init__(self, runtime: Runtime, directory: Path, plan_dir: Path) -> None:
        self.runtime = runtime
        self.directory = directory
        self.plan_dir = plan_dir
        self._lock = asyncio.Lock()
        self._seen = ""

    async def start(self) -> None:
        self._seen = await asyncio.to_thread(self.fingerprint)

    async def reload(self, reason: str) -> bool:
        """Load the directory and swap the set in; keep the old one on any problem."""
        async with self._lock:
            self._seen = await asyncio.to_thread(self.fingerprint)
            try:
                mappings = await asyncio.to_thread(
                    load_mappings, self.directory, plan_dir=self.plan_dir
                )
            except MappingError as error:
                log.error(
                    "mappings.reload_failed",
                    reason=reason,
                    directory=str(self.directory),
                    kept=len(self.runtime.mappings.mappings),
                    problems=[str(problem) for problem in error.problems],
                )
                return False
            self.runtime.mappings = mappings
            log.info(
                "mappings.reloaded",
                reason=reason,
                directory=str(self.directory),
                mappings=len(mappings.mappings),
            )
            return True

    async def watch(self) -> None:
        """Reload whenever the files change; one attempt per distinct change."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if await asyncio.to_thread(self.fingerprint) != self._seen:
                await self.reload("file_changed")

    def fingerprint(self) -> str:
        """A hash of every mapping and tracking plan file's path and bytes."""
        digest = hashlib.sha256()
        try:
            files = find_mapping_files(self.directory)
        except MappingError as error:
            digest.update(str(error).encode())
            files = []
        if self.plan_dir.is_dir():
            files += sorted(self.plan_dir.glob("*.json"))
        for path in files:
            digest.update(str(path).encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError as error:
                digest.update(str(error).encode())
            digest.update(b"\0")
        return digest.hexdigest()


# One process-wide SIGHUP handler reloads every running app's mappings.
_reloaders: set[MappingReloader] = set()
_pending: set[asyncio.Task[bool]] = set()


def _on_sighup() -> None:
    for reloader in _reloaders:
        task = asyncio.create_task(reloader.reload("sighup"))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


def _listen(reloader: MappingReloader) -> None:
    hangup = getattr(signal, "SIGHUP", None)
    if not _reloaders and hangup is not None:
        try:
            asyncio.get_running_loop().add_signal_handler(hangup, _on_sighup)
        except (RuntimeError, ValueError):  # not the main thread: files only
            log.info("mappings.sighup_unavailable")
    _reloaders.add(reloader)


def _stop_listening(reloader: MappingReloader) -> None:
    _reloaders.discard(reloader)
    hangup = getattr(signal, "SIGHUP", None)
    if not _reloaders and hangup is not None:
        asyncio.get_running_loop().remove_signal_handler(hangup)


async def reload_context(app: web.Application) -> AsyncIterator[None]:
    """Watch the mapping directory while the app runs, if it came from one."""
    runtime = app[runtime_key]
    directory = runtime.mappings.source
    if directory is None:
        yield
        return
    reloader = MappingReloader(runtime, directory, default_plan_dir())
    await reloader.start()
    _listen(reloader)
    task = asyncio.create_task(reloader.watch(), name="mapping-watcher")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    _stop_listening(reloader)
