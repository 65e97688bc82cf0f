"""A config file that is read again while the server runs (``--model_config_file`` with
``--model_config_file_poll_wait_seconds``, ``--rollout_config_file``): one reader for both,
stepped by ``check()`` (tests call it by hand; ``run()`` calls it every N seconds).

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

    def __init__(self, path: str, apply: Callable[[str], Awaitable[None]], what: str):
        self.path = path
        self.what = what
        self._apply = apply
        self.last: Optional[str] = None  # the text last seen (applied or refused)

    async def prime(self) -> None:
        """Take the current text as already applied (start-up read it through the same parser)."""
        self.last = await self._read()

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
        """``prime``, then ``check`` every ``every_seconds`` until cancelled."""
        await self.prime()
        while True:
            await asyncio.sleep(every_seconds)
            await self.check()

    async def _read(self) -> Optional[str]:
        return await asyncio.get_running_loop().run_in_executor(None, _read_text, self.path, self.what)


def _read_text(path: str, what: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        log.error("Cannot read %s %s: %s", what, path, e.strerror)
        return None
