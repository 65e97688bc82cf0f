"""A rollout's hold on its versions: the stable and canary stay aspired whatever the model's
version policy (``FileSystemSource.pin``), and SetRollout can ask whether they are on disk and
wait until they have been tried.

Owned by the event loop that owns the source and the manager.
"""

from __future__ import annotations

from server.lifecycle.manager import Manager
from server.lifecycle.source import FileSystemSource


class Pins:
    def __init__(self, source: FileSystemSource, manager: Manager):
        self._source = source
        self._manager = manager

    def pin(self, name: str, versions: set[int]) -> None:
        """Keep ``versions`` of ``name`` aspired (an empty set releases them to the policy)."""
        self._source.pin(name, versions)

    async def on_disk(self, name: str) -> set[int]:
        """The settled versions of ``name`` under its base path after a poll now (empty: not a
        served model; a directory still being written is not settled yet)."""
        await self._source.poll()
        return self._source.settled_versions(name)

    async def settle(self, name: str) -> None:
        """Poll now (the pins take effect), then wait until every aspired version of ``name``
        has been tried once."""
        await self._source.poll()
        await self._manager.wait_until_tried([name])

    def load_error(self, name: str, version: int) -> str:
        """Why ``version`` of ``name`` is not available, as the manager says (or "not loaded")."""
        for s in self._manager.status(name):
            if s.version == version:
                error = s.error or s.retry_error
                return f"{s.state.name}{f': {error.message}' if error is not None else ''}"
        return "not loaded"
