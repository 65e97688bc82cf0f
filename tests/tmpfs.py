"""A small file system of the test's own, for disk-full and read-only cases: a tmpfs of a few
hundred KiB mounted on a fresh directory, filled to the last block or remounted read-only on
demand, unmounted on exit (also after a failure). Needs root and ``mount``; skipped without
them, failed when VERSO_REQUIRE_TOOLS is set (CI), like ``tests/netns.py``.

    with small_tmpfs() as fs:
        path = fs.path("state.sqlite")
        fs.fill()        # every later write that needs a block gets ENOSPC
        fs.free()
        fs.read_only()   # mount -o remount,ro: root cannot write either
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Iterator

from tests.netns import _unavailable


class Tmpfs:
    def __init__(self, root: str):
        self.root = root
        self._filler = os.path.join(root, ".filler")

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def fill(self) -> None:
        """Write a filler file until the file system is full (ENOSPC at the last page)."""
        with open(self._filler, "ab", buffering=0) as f:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        f.write(block)
                except OSError:
                    continue
        assert shutil.disk_usage(self.root).free < 1 << 12, "the tmpfs did not fill"

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._filler)

    def read_only(self) -> None:
        _mount("-o", "remount,ro", self.root)

    def writable(self) -> None:
        _mount("-o", "remount,rw", self.root)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def small_tmpfs(size: str = "512k") -> Iterator[Tmpfs]:
    """A tmpfs of ``size`` on a new directory (see the module)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _unavailable("a tmpfs of the test's own needs root and mount")
    root = tempfile.mkdtemp(prefix="verso-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", root],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        os.rmdir(root)
        _unavailable(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield Tmpfs(root)
    finally:
        # Lazy: a file a failed test left open must not keep the mount (and the test run) hanging.
        subprocess.run(["umount", "-l", root], capture_output=True, timeout=10)
        with contextlib.suppress(OSError):
            os.rmdir(root)
