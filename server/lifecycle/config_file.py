"""Config files read at start-up and again while the server runs (``--model_config_file``
with ``--model_config_file_poll_wait_seconds``, ``--rollout_config_file``): ``read_text`` is
the one read of such a file, at start-up (server.settings, whose text is then what the polls
compare with) and in every poll; ``ConfigFileWatch`` is the poll, stepped by ``check()``
(tests call it by hand; ``run()`` calls it every N seconds).

Owned by the server's event loop; the file reads go to the default executor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Optional

from protos.errors import ServingError

log = logging.getLogger("verso.config")


class ConfigFileWatch:
    """``path``'s text, applied again whenever it changes. ``apply(text)`` parses, validates
    and applies it; a ServingError from it (parse, validation) is logged with its text and
    changes nothing, and the same text is not tried again until the file changes. A file that
    cannot be read is logged and skipped."""

    def __init__(self, path: str, apply: Callable[[str], Awaitable[None]], what: str, *,
                 applied: Optional[str] = None):
        self.path = path
        self.what = what
        self._apply = apply
        # The text last seen (applied or refused): start-up's, when given, so that a change made
        # while the server was starting is not mistaken for what start-up applied.
        self.last: Optional[str] = applied
        self._primed = applied is not None

    async def prime(self) -> None:
        """Take the file's current text as already applied."""
        self.last = await self._read()
        self._primed = True

    async def check(self) -> bool:
        """One step: read the file; when its text changed, apply it. True when it was applied."""
        text = await self._read()
        if text is None or text == self.last:
            return False
        self.last = text
        try:
            await self._apply(text)
        except ServingError as e:
            log.error("%s %s was not applied: %s", self.what.capitalize(), self.path, e)
            return False
        log.info("Applied the changed %s %s", self.what, self.path)
        return True

    async def run(self, every_seconds: float) -> None:
        """``prime`` (unless start-up's text was given), then ``check`` every ``every_seconds``
        until cancelled."""
        if not self._primed:
            await self.prime()
        while True:
            await asyncio.sleep(every_seconds)
            await self.check()

    async def _read(self) -> Optional[str]:
        return await asyncio.get_running_loop().run_in_executor(None, _read_text, self.path, self.what)


def read_text(path: str) -> str:
    """A config file's whole text (UTF-8). Raises OSError; each caller words it."""
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def _read_text(path: str, what: str) -> Optional[str]:
    try:
        return read_text(path)
    except OSError as e:
        log.error("Cannot read %s %s: %s", what, path, e.strerror)
        return None
