"""The test harness's process wrapper keeps a bounded window of output and still finds lines."""

from __future__ import annotations

import sys

import pytest

from tests.support import procs
from tests.support.procs import Proc


async def test_a_chatty_process_keeps_only_the_newest_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procs, "MAX_LINES", 100)
    script = "import sys\nfor i in range(1000): print(i)\nprint('done')\nsys.stdin.read()"
    proc = await Proc([sys.executable, "-c", script], "chatty").start()
    try:
        assert await proc.wait_line("done", timeout=20) == "done"
        assert len(proc.lines) <= 100
        assert proc.dropped + len(proc.lines) == 1001
        assert proc.lines[-2:] == ["999", "done"]
    finally:
        await proc.kill()
