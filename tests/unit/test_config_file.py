"""The polled config-file reader, stepped by hand: a change made while the server was still
starting (after start-up read the file, before the poll began) is applied, not mistaken for
start-up's text."""

from __future__ import annotations

import asyncio

from server.lifecycle.config_file import ConfigFileWatch


def test_a_change_made_during_start_up_is_applied_by_the_first_check(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("v2")  # written after start-up read "v1"
    applied = []

    async def apply(text):
        applied.append(text)

    async def body():
        watch = ConfigFileWatch(str(path), apply, "model config file", applied="v1")
        assert await watch.check() is True and await watch.check() is False
        primed = ConfigFileWatch(str(path), apply, "model config file")  # no start-up text: the file's
        await primed.prime()
        assert await primed.check() is False

    asyncio.run(body())
    assert applied == ["v2"]
